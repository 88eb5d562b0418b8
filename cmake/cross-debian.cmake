# Shared part of the toolchain files for Debian's cross compilers (crossbuild-essential-ARCH).
# The including file sets HOM_CROSS_TRIPLET (GNU triplet), HOM_CROSS_PROCESSOR
# (CMAKE_SYSTEM_PROCESSOR), HOM_DEB_ARCHITECTURE (dpkg's name) and HOM_CROSS_QEMU.
#
# The target's libraries are Debian's -dev packages for that architecture, installed next to
# the build machine's through multiarch (`dpkg --add-architecture ARCH`, then
# `apt-get install libfoo-dev:ARCH`; scripts/cross-deps.sh): headers in /usr/include,
# libraries, CMake packages and pkg-config files in /usr/lib/TRIPLET. CMake finds them there
# through CMAKE_LIBRARY_ARCHITECTURE, dpkg-shlibdeps through dpkg's own database, and
# qemu-user finds the target's dynamic loader in /lib, so no sysroot is needed.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${HOM_CROSS_PROCESSOR})
set(CMAKE_LIBRARY_ARCHITECTURE ${HOM_CROSS_TRIPLET})
set(CMAKE_C_COMPILER ${HOM_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${HOM_CROSS_TRIPLET}-g++)

# pkg-config: the target's .pc files only (Debian 12 ships no TRIPLET-pkg-config wrapper).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${HOM_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig)

# Unit tests run through qemu-user (Debian's qemu-user-static), no binfmt registration needed.
find_program(HOM_CROSS_QEMU_BIN ${HOM_CROSS_QEMU})
if(HOM_CROSS_QEMU_BIN)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${HOM_CROSS_QEMU_BIN})
endif()
