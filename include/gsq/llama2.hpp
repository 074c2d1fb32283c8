// llama2.hpp: deprecated since 0.2, removed in 0.3; include <gsq/models/llama/weights.hpp> instead.
#pragma once

#include "gsq/models/llama/weights.hpp"
