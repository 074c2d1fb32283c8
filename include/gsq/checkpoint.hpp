// checkpoint.hpp: deprecated since 0.2, removed in 0.3; include <gsq/io/checkpoint.hpp> instead.
#pragma once

#include "gsq/io/checkpoint.hpp"
