# RunConsumerTest.cmake: ctest's consumer.find_package. Installs the gsq build tree into a
# scratch prefix, then configures, builds and runs tests/consumer against that prefix only.
# Any failing step fails the test. Run as: cmake -DGSQ_BINARY_DIR=... [-D...] -P <this file>
cmake_minimum_required(VERSION 3.14)

foreach(_var GSQ_BINARY_DIR GSQ_CONSUMER_SOURCE_DIR GSQ_PREFIX GSQ_CONSUMER_BINARY_DIR)
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

# 1. A fresh install: stale headers from an earlier run must not mask a missing install rule.
file(REMOVE_RECURSE "${GSQ_PREFIX}" "${GSQ_CONSUMER_BINARY_DIR}"
     "${GSQ_CONSUMER_BINARY_DIR}-init.cmake")
gsq_step("install" "${CMAKE_COMMAND}" --install "${GSQ_BINARY_DIR}" --prefix "${GSQ_PREFIX}"
         ${_config_args})

# 2. Configure the consumer with the same generator and compiler (and toolchain, if any).
set(_configure_args -S "${GSQ_CONSUMER_SOURCE_DIR}" -B "${GSQ_CONSUMER_BINARY_DIR}"
    "-DCMAKE_PREFIX_PATH=${GSQ_PREFIX}" "-DGSQ_EXPECTED_PREFIX=${GSQ_PREFIX}")
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
message(STATUS "consumer: find_package(gsq) works from ${GSQ_PREFIX}")
