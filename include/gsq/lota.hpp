// lota.hpp: deprecated since 0.2, removed in 0.3; include <gsq/nn/lota.hpp> instead.
#pragma once

#include "gsq/nn/lota.hpp"
