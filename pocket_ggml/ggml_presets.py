"""CMAKE_ARGS for building ggml-python for a device class, and the one this CPU should use.

`pip install` reads CMAKE_ARGS when it builds ggml-python from source, e.g.

    CMAKE_ARGS="$(python3 pocket_ggml/ggml_presets.py pi5)" pip install --no-cache-dir --no-binary ggml-python \
        ggml-python==0.0.45

ggml's default (-march=native / -mcpu=native) tunes the build to the machine that compiles it: such a
build dies with SIGILL on an older CPU, and under emulation ARM's native detection finds nothing.
LLAMAFILE (tinyBLAS sgemm) is on in every preset: the Mimi decoder's matmuls have 16+ columns, and a
build without it (a plain `pip install ggml-python`) decodes 1.5-2.8x slower.

The table is the package's (the runtime names the reinstall command when it finds a slow build) and
scripts/ggml-preset.sh prints from it; this file runs as a script with the standard library alone, so
it works before the package is installed. Ground floor: imports nothing of pocket_ggml.
"""

from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path

# name: (CMAKE_ARGS, the CPUs it is for)
PRESETS: dict[str, tuple[str, str]] = {
    "x86-native": ("-DGGML_LLAMAFILE=ON", "this machine's CPU only (what .ci/run builds)"),
    "x86-portable": (
        (
            "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
            "-DGGML_LLAMAFILE=ON"
        ),
        "x86-64-v3: Haswell (2013) / Zen and later",
    ),
    "x86-baseline": (
        (
            "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF "
            "-DGGML_BMI2=OFF -DGGML_LLAMAFILE=ON"
        ),
        "any x86-64-v2 CPU, slow",
    ),
    "pi4": (
        "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a -DGGML_LLAMAFILE=ON",
        "Cortex-A72 (Raspberry Pi 4, most SBCs): NEON only",
    ),
    "pi5": (
        "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16 -DGGML_LLAMAFILE=ON",
        "Cortex-A76 (Raspberry Pi 5, RK3588)",
    ),
    "phone": (
        "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.6-a+dotprod+fp16+i8mm -DGGML_LLAMAFILE=ON",
        "phone-class cores with int8 matmul (Cortex-A710/X2 and later)",
    ),
}
GGML_PYTHON = "ggml-python"


def cmake_args(preset: str) -> str:
    return PRESETS[preset][0]


def arm_features(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The Features of an ARM /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Features":
            return set(value.split())
    return set()


def preset_for_this_cpu(machine: str | None = None, features: set[str] | None = None) -> str | None:
    """The preset to build on this machine for this machine: x86-native on x86 (tuned to the CPU
    that compiles it); on 64-bit ARM the richest of phone (i8mm), pi5 (dotprod + fp16), pi4 by the
    CPU's features. None for other machines."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return "x86-native"
    if machine in ("aarch64", "arm64"):
        features = arm_features() if features is None else features
        if {"i8mm", "asimddp"} <= features:
            return "phone"
        if {"asimddp", "asimdhp"} <= features:
            return "pi5"
        return "pi4"
    return None


def reinstall_command(preset: str, version: str, python: str | None = None) -> str:
    """The shell command that rebuilds and reinstalls ggml-python `version` from source with `preset`
    into the environment of `python` (this interpreter by default)."""
    return (
        f"CMAKE_ARGS={shlex.quote(cmake_args(preset))} {shlex.quote(python or sys.executable)} -m pip install "
        f"--force-reinstall --no-deps --no-cache-dir --no-binary {GGML_PYTHON} {GGML_PYTHON}=={version}"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PRESETS:
        print(f"usage: ggml_presets.py {'|'.join(PRESETS)}", file=sys.stderr)
        for name, (_, cpus) in PRESETS.items():
            print(f"  {name:13s} {cpus}", file=sys.stderr)
        return 2
    print(cmake_args(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
