# Debian arm64: cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake
# (scripts/cross.sh arm64 builds, packages and tests it).
set(HOM_CROSS_TRIPLET aarch64-linux-gnu)
set(HOM_CROSS_PROCESSOR aarch64)
set(HOM_DEB_ARCHITECTURE arm64)
set(HOM_CROSS_QEMU qemu-aarch64-static)
include(${CMAKE_CURRENT_LIST_DIR}/cross-debian.cmake)
