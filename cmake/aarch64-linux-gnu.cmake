# aarch64-linux-gnu.cmake: cross toolchain for Debian's g++-aarch64-linux-gnu. Tests run under
# qemu-aarch64 (package qemu-user); -cpu max provides the dot-product extension.
#   cmake --preset aarch64 && cmake --build --preset aarch64 && ctest --preset aarch64
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(GSQ_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${GSQ_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${GSQ_CROSS_TRIPLE}-g++)

# ARMv8.2-A with the dot-product extension (SDOT/UDOT), the baseline of the NEON kernels.
set(CMAKE_C_FLAGS_INIT "-march=armv8.2-a+dotprod")
set(CMAKE_CXX_FLAGS_INIT "-march=armv8.2-a+dotprod")

set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-cpu;max;-L;/usr/${GSQ_CROSS_TRIPLE}")

# Libraries and packages come from the target sysroot only; programs from the host.
set(CMAKE_FIND_ROOT_PATH "/usr/${GSQ_CROSS_TRIPLE}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# Overridable (-D...=BOTH), e.g. by the consumer test, which installs into a build-tree prefix.
if(NOT DEFINED CMAKE_FIND_ROOT_PATH_MODE_PACKAGE)
  set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
endif()
