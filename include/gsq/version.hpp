// version.hpp: the library version, in one place (CMakeLists.txt reads these three lines).
#pragma once

#define GSQ_VERSION_MAJOR 0
#define GSQ_VERSION_MINOR 2
#define GSQ_VERSION_PATCH 0

#define GSQ_DETAIL_STRINGIFY_(x) #x
#define GSQ_DETAIL_STRINGIFY(x) GSQ_DETAIL_STRINGIFY_(x)
/// "MAJOR.MINOR.PATCH", spelled from the three numbers above.
#define GSQ_VERSION_STRING                \
  GSQ_DETAIL_STRINGIFY(GSQ_VERSION_MAJOR) \
  "." GSQ_DETAIL_STRINGIFY(GSQ_VERSION_MINOR) "." GSQ_DETAIL_STRINGIFY(GSQ_VERSION_PATCH)

namespace gsq {
inline constexpr const char* kVersion = GSQ_VERSION_STRING;
}  // namespace gsq
