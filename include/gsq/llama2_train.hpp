// llama2_train.hpp: deprecated since 0.2, removed in 0.3; include <gsq/models/llama/lora_model.hpp>
// instead.
#pragma once

#include "gsq/models/llama/lora_model.hpp"
