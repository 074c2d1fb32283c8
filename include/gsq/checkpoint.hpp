// checkpoint.hpp: deprecated since 0.2, removed in 0.3; include <gsq/io/checkpoint.hpp> (the
// format) or <gsq/io/checkpoint_file.hpp> (files) instead.
#pragma once

#include "gsq/io/checkpoint_file.hpp"
