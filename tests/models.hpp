// models.hpp: where tests find the optional model files of ../shared/models.
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace gsq::test {

/// Path of model file `name` (GSQ_MODELS_DIR from the environment, else from the build), or an
/// empty string when the file is not there.
inline std::string model_path(const std::string& name) {
  const char* env = std::getenv("GSQ_MODELS_DIR");
#ifdef GSQ_MODELS_DIR
  const std::string dir = env != nullptr ? env : GSQ_MODELS_DIR;
#else
  const std::string dir = env != nullptr ? env : "../shared/models";
#endif
  const std::string path = dir + "/" + name;
  return std::ifstream(path).good() ? path : std::string();
}

}  // namespace gsq::test
