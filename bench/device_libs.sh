#!/bin/sh
# device_libs.sh BINARY... — copy the shared libraries these binaries need, except glibc's and
# CUDA's, into .devlibs/, so that a build from this machine runs on a GPU machine that lacks
# them (carry .devlibs.tar.xz; there: tar xf .devlibs.tar.xz; LD_LIBRARY_PATH=.devlibs ...).
set -e
mkdir -p .devlibs
for bin in "$@"; do
    ldd "$bin" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libresolv.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;;
        libcuda.so*|libcudart.so*|libcublas*.so*) ;;
        *) cp -L "$lib" .devlibs/ ;;
    esac
done
du -sh .devlibs
tar cJf .devlibs.tar.xz .devlibs   # carried compressed: the carry limit is 64 MiB in all
ls -la .devlibs.tar.xz
