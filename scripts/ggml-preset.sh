#!/usr/bin/env bash
# CMAKE_ARGS for building ggml-python for a device class: `pip install` reads them at build time, e.g.
#   CMAKE_ARGS="$(bash scripts/ggml-preset.sh pi5)" pip install --no-cache-dir --no-binary ggml-python ggml-python==0.0.45
# ggml's default (-march=native / -mcpu=native) tunes the build to the machine that compiles it: such a
# build dies with SIGILL on an older CPU, and under emulation ARM's native detection finds nothing.
# LLAMAFILE (tinyBLAS sgemm) is on in every preset: the Mimi decoder's matmuls have 16+ columns.
set -euo pipefail
case "${1:-}" in
    x86-native)   echo "-DGGML_LLAMAFILE=ON" ;;  # this machine's CPU only (what .ci/run builds)
    x86-portable) echo "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_LLAMAFILE=ON" ;;  # x86-64-v3: Haswell (2013) / Zen and later
    x86-baseline) echo "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF -DGGML_LLAMAFILE=ON" ;;  # any x86-64-v2 CPU, slow
    pi4)          echo "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a -DGGML_LLAMAFILE=ON" ;;  # Cortex-A72 (Raspberry Pi 4, most SBCs): NEON only
    pi5)          echo "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16 -DGGML_LLAMAFILE=ON" ;;  # Cortex-A76 (Raspberry Pi 5, RK3588)
    phone)        echo "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.6-a+dotprod+fp16+i8mm -DGGML_LLAMAFILE=ON" ;;  # phone-class cores with int8 matmul (Cortex-A710/X2 and later)
    *)
        echo "usage: $0 x86-native|x86-portable|x86-baseline|pi4|pi5|phone" >&2
        exit 2 ;;
esac
