# RunConsumerTest.cmake: ctest's consumer.* tests. Configures, builds and runs a separate project
# that uses gsq the way a user's project does; any failing step fails the test.
#   GSQ_CONSUMER_MODE=find_package      installs the gsq build tree GSQ_BINARY_DIR into a scratch
#                                       prefix GSQ_PREFIX, then builds tests/consumer against it
#   GSQ_CONSUMER_MODE=add_subdirectory  builds tests/consumer_subdirectory, which adds the gsq
#                                       sources GSQ_SOURCE_DIR itself; then checks that installing
#                                       the consumer into GSQ_PREFIX installs nothing of gsq's
# Run as: cmake -DGSQ_CONSUMER_MODE=... -DGSQ_CONSUMER_SOURCE_DIR=... -DGSQ_CONSUMER_BINARY_DIR=...
#         -DGSQ_PREFIX=... [-DGSQ_BINARY_DIR=... | -DGSQ_SOURCE_DIR=...] [-D...] -P <this file>
cmake_minimum_required(VERSION 3.14)

set(_required GSQ_CONSUMER_MODE GSQ_CONSUMER_SOURCE_DIR GSQ_CONSUMER_BINARY_DIR GSQ_PREFIX)
if(GSQ_CONSUMER_MODE STREQUAL "find_package")
  list(APPEND _required GSQ_BINARY_DIR)
elseif(GSQ_CONSUMER_MODE STREQUAL "add_subdirectory")
  list(APPEND _required GSQ_SOURCE_DIR)
else()
  message(FATAL_ERROR "RunConsumerTest.cmake: GSQ_CONSUMER_MODE must be find_package or "
                      "add_subdirectory, not '${GSQ_CONSUMER_MODE}'")
endif()
foreach(_var IN LISTS _required)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "RunConsumerTest.cmake: ${_var} must be set")
  endif()
endforeach()

function(gsq_step name)
  string(REPLACE ";" " " _pretty "${ARGN}")
  message(STATUS "consumer: ${name}: ${_pretty}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _result)
  if(NOT _result EQUAL 0)
    message(FATAL_ERROR "consumer: ${name} failed (${_result})")
  endif()
endfunction()

set(_config_args "")
if(GSQ_CONFIG)
  set(_config_args --config "${GSQ_CONFIG}")
endif()

# 1. A fresh start: stale files from an earlier run must not mask a missing (or extra) rule.
file(REMOVE_RECURSE "${GSQ_PREFIX}" "${GSQ_CONSUMER_BINARY_DIR}"
     "${GSQ_CONSUMER_BINARY_DIR}-init.cmake")
set(_configure_args -S "${GSQ_CONSUMER_SOURCE_DIR}" -B "${GSQ_CONSUMER_BINARY_DIR}"
    "-DGSQ_EXPECTED_VERSION=${GSQ_EXPECTED_VERSION}")
if(GSQ_CONSUMER_MODE STREQUAL "find_package")
  gsq_step("install" "${CMAKE_COMMAND}" --install "${GSQ_BINARY_DIR}" --prefix "${GSQ_PREFIX}"
           ${_config_args})
  list(APPEND _configure_args "-DCMAKE_PREFIX_PATH=${GSQ_PREFIX}"
       "-DGSQ_EXPECTED_PREFIX=${GSQ_PREFIX}")
else()
  list(APPEND _configure_args "-DGSQ_SOURCE_DIR=${GSQ_SOURCE_DIR}")
endif()

# 2. Configure the consumer with the same generator and compiler (and toolchain, if any).
if(GSQ_GENERATOR)
  list(APPEND _configure_args -G "${GSQ_GENERATOR}")
endif()
if(GSQ_GENERATOR_PLATFORM)
  list(APPEND _configure_args -A "${GSQ_GENERATOR_PLATFORM}")
endif()
if(GSQ_GENERATOR_TOOLSET)
  list(APPEND _configure_args -T "${GSQ_GENERATOR_TOOLSET}")
endif()
if(GSQ_MAKE_PROGRAM)
  list(APPEND _configure_args "-DCMAKE_MAKE_PROGRAM=${GSQ_MAKE_PROGRAM}")
endif()
if(GSQ_CXX_COMPILER)
  list(APPEND _configure_args "-DCMAKE_CXX_COMPILER=${GSQ_CXX_COMPILER}")
endif()
if(GSQ_CONFIG)
  list(APPEND _configure_args "-DCMAKE_BUILD_TYPE=${GSQ_CONFIG}")
endif()
if(GSQ_WERROR)
  list(APPEND _configure_args "-DGSQ_CONSUMER_WERROR=ON")
endif()
if(GSQ_TOOLCHAIN_FILE)
  # The scratch prefix lies outside the target sysroot, so let find_package() search it.
  list(APPEND _configure_args "-DCMAKE_TOOLCHAIN_FILE=${GSQ_TOOLCHAIN_FILE}"
       "-DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=BOTH")
endif()
if(GSQ_EMULATOR)
  # A list value cannot travel through a command line intact; use an initial-cache script.
  string(REPLACE "|" ";" _emulator "${GSQ_EMULATOR}")
  set(_init_cache "${GSQ_CONSUMER_BINARY_DIR}-init.cmake")
  file(WRITE "${_init_cache}"
       "set(CMAKE_CROSSCOMPILING_EMULATOR \"${_emulator}\" CACHE STRING \"\")\n")
  list(APPEND _configure_args -C "${_init_cache}")
endif()
gsq_step("configure" "${CMAKE_COMMAND}" ${_configure_args})

# 3. Build it.
gsq_step("build" "${CMAKE_COMMAND}" --build "${GSQ_CONSUMER_BINARY_DIR}" ${_config_args})

# 4. Run it, through the consumer's own ctest so that an emulator is applied when cross-compiling.
set(_ctest_args "")
if(GSQ_CONFIG)
  set(_ctest_args -C "${GSQ_CONFIG}")
endif()
message(STATUS "consumer: run: ctest in ${GSQ_CONSUMER_BINARY_DIR}")
execute_process(COMMAND "${CMAKE_CTEST_COMMAND}" ${_ctest_args} --output-on-failure --no-tests=error
                WORKING_DIRECTORY "${GSQ_CONSUMER_BINARY_DIR}" RESULT_VARIABLE _result)
if(NOT _result EQUAL 0)
  message(FATAL_ERROR "consumer: run failed (${_result})")
endif()

if(GSQ_CONSUMER_MODE STREQUAL "find_package")
  message(STATUS "consumer: find_package(gsq) works from ${GSQ_PREFIX}")
else()
  # 5. Installing the parent installs its program and nothing else: below a parent project,
  #    GSQ_INSTALL defaults to off.
  gsq_step("install" "${CMAKE_COMMAND}" --install "${GSQ_CONSUMER_BINARY_DIR}"
           --prefix "${GSQ_PREFIX}" ${_config_args})
  file(GLOB_RECURSE _installed RELATIVE "${GSQ_PREFIX}" "${GSQ_PREFIX}/*")
  list(FILTER _installed EXCLUDE REGEX "^bin/gsq_consumer(\\.exe)?$")
  if(_installed)
    string(REPLACE ";" "\n  " _installed "${_installed}")
    message(FATAL_ERROR "consumer: installing the parent project also installed:\n  ${_installed}")
  endif()
  message(STATUS "consumer: add_subdirectory(gsq) works and installs nothing of gsq's")
endif()
