// int8.hpp: deprecated since 0.2, removed in 0.3; include <gsq/baselines/int8.hpp> instead.
#pragma once

#include "gsq/baselines/int8.hpp"
