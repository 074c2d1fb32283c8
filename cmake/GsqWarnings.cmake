# GsqWarnings.cmake: warning flags for gsq's own tests, benchmarks and examples.
# Never applied to the gsq interface target: a consumer's flags are its own business.
include_guard(GLOBAL)

function(gsq_add_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
    if(GSQ_WERROR)
      target_compile_options(${target} PRIVATE /WX)
    endif()
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
    if(GSQ_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
