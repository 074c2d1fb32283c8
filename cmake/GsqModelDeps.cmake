# GsqModelDeps.cmake: the model component's optional libraries, as imported targets that
# gsq::llama links when they are found.  The numeric core (gsq::gsq) never uses them.  Included
# by the top-level CMakeLists.txt and by the installed gsqConfig.cmake, so that a consumer of
# gsq::llama finds the same libraries.
#   gsq::json           nlohmann/json 3 (header-only): config.json, tokenizer.json, safetensors
#                       headers, PEFT files.  GSQ_HAVE_JSON=1 on gsq::llama when found.
#   gsq::pcre2          PCRE2 (8-bit): the pre-tokenizer regexes of byte-level BPE vocabularies.
#                       GSQ_HAVE_PCRE2=1.
#   gsq::sentencepiece  libsentencepiece: Hugging Face tokenizer.model files.
#                       GSQ_HAVE_SENTENCEPIECE=1.
# Missing ones leave their headers unusable with a clear #error, and the features that need them
# throw an error that names the library.
include_guard(GLOBAL)

if(NOT TARGET gsq::json)
  find_package(nlohmann_json 3 QUIET)
  if(NOT nlohmann_json_FOUND AND CMAKE_CROSSCOMPILING)
    # Architecture-independent headers: the host's copy serves a cross build too.
    find_package(nlohmann_json 3 QUIET NO_CMAKE_FIND_ROOT_PATH)
  endif()
  if(nlohmann_json_FOUND)
    add_library(gsq::json INTERFACE IMPORTED)
    set_target_properties(gsq::json PROPERTIES INTERFACE_LINK_LIBRARIES nlohmann_json::nlohmann_json
                                               INTERFACE_COMPILE_DEFINITIONS GSQ_HAVE_JSON=1)
  endif()
endif()

if(NOT TARGET gsq::pcre2)
  find_path(GSQ_PCRE2_INCLUDE_DIR pcre2.h)
  find_library(GSQ_PCRE2_LIBRARY NAMES pcre2-8)
  mark_as_advanced(GSQ_PCRE2_INCLUDE_DIR GSQ_PCRE2_LIBRARY)
  if(GSQ_PCRE2_INCLUDE_DIR AND GSQ_PCRE2_LIBRARY)
    add_library(gsq::pcre2 INTERFACE IMPORTED)
    set_target_properties(gsq::pcre2 PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${GSQ_PCRE2_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${GSQ_PCRE2_LIBRARY}"
      INTERFACE_COMPILE_DEFINITIONS "GSQ_HAVE_PCRE2=1;PCRE2_CODE_UNIT_WIDTH=8")
  endif()
endif()

if(NOT TARGET gsq::sentencepiece)
  find_path(GSQ_SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
  find_library(GSQ_SENTENCEPIECE_LIBRARY NAMES sentencepiece)
  mark_as_advanced(GSQ_SENTENCEPIECE_INCLUDE_DIR GSQ_SENTENCEPIECE_LIBRARY)
  if(GSQ_SENTENCEPIECE_INCLUDE_DIR AND GSQ_SENTENCEPIECE_LIBRARY)
    add_library(gsq::sentencepiece INTERFACE IMPORTED)
    set_target_properties(gsq::sentencepiece PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${GSQ_SENTENCEPIECE_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${GSQ_SENTENCEPIECE_LIBRARY}"
      INTERFACE_COMPILE_DEFINITIONS GSQ_HAVE_SENTENCEPIECE=1)
  endif()
endif()

set(GSQ_MODEL_DEPS "")
foreach(_gsq_dep json pcre2 sentencepiece)
  if(TARGET gsq::${_gsq_dep})
    list(APPEND GSQ_MODEL_DEPS gsq::${_gsq_dep})
  endif()
endforeach()
