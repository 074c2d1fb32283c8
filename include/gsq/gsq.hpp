// gsq.hpp: the library, core + nn + optim: the format, tensors, conversion, matmul, the FP8 and
// INT8 baselines, the adapter layers, the optimizers and the in-memory checkpoint format.
// Not included, ask for them by name: file I/O (io/file.hpp, io/checkpoint_file.hpp), the
// models (models/llama/*.hpp, CMake target gsq::llama) and the Eigen interop (eigen.hpp).
#pragma once

#include "gsq/baselines/fp8.hpp"
#include "gsq/baselines/int8.hpp"
#include "gsq/convert.hpp"
#include "gsq/format.hpp"
#include "gsq/half.hpp"
#include "gsq/io/byte_io.hpp"
#include "gsq/io/checkpoint.hpp"
#include "gsq/matmul.hpp"
#include "gsq/nn/frozen_base.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/nn/lora.hpp"
#include "gsq/nn/lota.hpp"
#include "gsq/nn/options.hpp"
#include "gsq/nn/ternary.hpp"
#include "gsq/optim.hpp"
#include "gsq/regroup.hpp"
#include "gsq/tensor.hpp"
#include "gsq/thread_pool.hpp"
#include "gsq/version.hpp"
