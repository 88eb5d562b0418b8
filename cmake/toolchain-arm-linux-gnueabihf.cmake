# Debian armhf (ARMv7, hard float): cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm-linux-gnueabihf.cmake
# (scripts/cross.sh armhf builds, packages and tests it).
set(HOM_CROSS_TRIPLET arm-linux-gnueabihf)
set(HOM_CROSS_PROCESSOR arm)
set(HOM_DEB_ARCHITECTURE armhf)
set(HOM_CROSS_QEMU qemu-arm-static)
include(${CMAKE_CURRENT_LIST_DIR}/cross-debian.cmake)
