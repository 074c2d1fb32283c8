// gsq.hpp: the whole library except optional interop (eigen.hpp).
#pragma once

#include "gsq/checkpoint.hpp"
#include "gsq/convert.hpp"
#include "gsq/detail/cpu.hpp"
#include "gsq/format.hpp"
#include "gsq/fp8.hpp"
#include "gsq/half.hpp"
#include "gsq/int8.hpp"
#include "gsq/llama2.hpp"
#include "gsq/llama2_run.hpp"
#include "gsq/lora.hpp"
#include "gsq/matmul.hpp"
#include "gsq/optim.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"
#include "gsq/tokenizer.hpp"
#include "gsq/version.hpp"
