// version.hpp: the library version.
#pragma once

#define GSQ_VERSION_MAJOR 0
#define GSQ_VERSION_MINOR 1
#define GSQ_VERSION_PATCH 0

namespace gsq {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace gsq
