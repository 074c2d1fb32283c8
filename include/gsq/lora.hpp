// lora.hpp: deprecated since 0.2, removed in 0.3; include <gsq/nn/lora.hpp> instead.
#pragma once

#include "gsq/nn/lora.hpp"
