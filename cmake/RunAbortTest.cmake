# RunAbortTest.cmake: ctest's noexcept.abort. Runs a program built with -fno-exceptions that first
# makes valid calls, then breaks a public precondition; passes only if the program printed
# GSQ_EXPECT_STDOUT, then died (non-zero exit, normally SIGABRT) with GSQ_EXPECT_STDERR on stderr.
# Run as: cmake -DGSQ_PROGRAM=... -DGSQ_EXPECT_STDOUT=... -DGSQ_EXPECT_STDERR=...
#         [-DGSQ_EMULATOR=a|b|c] -P <this file>
cmake_minimum_required(VERSION 3.14)

foreach(_var GSQ_PROGRAM GSQ_EXPECT_STDOUT GSQ_EXPECT_STDERR)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "RunAbortTest.cmake: ${_var} must be set")
  endif()
endforeach()

set(_command "${GSQ_PROGRAM}")
if(GSQ_EMULATOR)
  string(REPLACE "|" ";" _emulator "${GSQ_EMULATOR}")
  set(_command ${_emulator} "${GSQ_PROGRAM}")
endif()

execute_process(COMMAND ${_command} RESULT_VARIABLE _result OUTPUT_VARIABLE _out
                ERROR_VARIABLE _err)
message(STATUS "exit: ${_result}")
message(STATUS "stdout:\n${_out}")
message(STATUS "stderr:\n${_err}")

if("${_result}" STREQUAL "0")
  message(FATAL_ERROR "the program exited with status 0; it should have aborted")
endif()
if(NOT _out MATCHES "${GSQ_EXPECT_STDOUT}")
  message(FATAL_ERROR "stdout does not match '${GSQ_EXPECT_STDOUT}' (the valid calls failed?)")
endif()
if(NOT _err MATCHES "${GSQ_EXPECT_STDERR}")
  message(FATAL_ERROR "stderr does not match '${GSQ_EXPECT_STDERR}'")
endif()
message(STATUS "aborted as expected (${_result}) with the gsq: message")
