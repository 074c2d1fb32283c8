// models.hpp: where tests find the optional model files of ../shared/models.
#pragma once

#include <cstdlib>
#include <cstdio>
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

/// Where the npm package @huggingface/gguf (the independent GGUF reader) is installed
/// (GSQ_HFGGUF_MODULES, else build/npm/node_modules where scripts/install-deps.sh puts it), or
/// "" with `why` set when it or node is missing.
inline std::string hfgguf_modules(std::string& why) {
  const char* env = std::getenv("GSQ_HFGGUF_MODULES");
#ifdef GSQ_NPM_MODULES
  const std::string modules = env != nullptr ? env : GSQ_NPM_MODULES;
#else
  const std::string modules = env != nullptr ? env : "build/npm/node_modules";
#endif
  if (!std::ifstream(modules + "/@huggingface/gguf/package.json").good()) {
    why = "@huggingface/gguf is not installed in " + modules +
          " (scripts/install-deps.sh installs it where npm is present)";
    return "";
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    why = "node is not installed";
    return "";
  }
  return modules;
}

}  // namespace gsq::test
