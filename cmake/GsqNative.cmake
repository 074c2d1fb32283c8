# GsqNative.cmake: -march=native for the programs this project builds for the machine it runs
# on (the gsq tool, the examples, the benchmarks), as llama.cpp builds its tools by default.
# gsq's matmul and conversion kernels choose their ISA at run time and need no flag, but the
# model's float code around them (norms, RoPE, softmax, the classifier's rows, the gathering of
# strided inputs) is plain C++ that the compiler vectorises for the target it is given: for
# x86-64's baseline that is SSE2, and a stories15M step of the baseline-built model_bench took
# 1.6-2x as long as the native build's.  Results are the same bits either way (gsq::gsq builds
# with -ffp-contract=off; golden.march_native checks it).  Never applied when cross-compiling,
# and never to the gsq target: a consumer's flags are its own.
include_guard(GLOBAL)
include(CheckCXXCompilerFlag)

option(GSQ_NATIVE "Compile the gsq tool, the examples and the benchmarks with -march=native" ON)

set(GSQ_CAN_BUILD_NATIVE OFF)
if(NOT CMAKE_CROSSCOMPILING AND NOT MSVC)
  check_cxx_compiler_flag(-march=native GSQ_HAVE_MARCH_NATIVE)
  set(GSQ_CAN_BUILD_NATIVE ${GSQ_HAVE_MARCH_NATIVE})
endif()

# gsq_native(<target>): -march=native for <target> when GSQ_NATIVE is on and the compiler takes it.
function(gsq_native target)
  if(GSQ_NATIVE AND GSQ_CAN_BUILD_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()
