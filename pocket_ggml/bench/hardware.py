"""What a benchmark ran on: the CPU (from /proc/cpuinfo and `platform`), the ggml build's CPU
features, CPU affinity, and package versions (read from installed metadata, nothing imported)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

# /proc/cpuinfo flags that matter for these kernels (x86 and Arm spellings), in display order.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
)
# ggml.ggml_cpu_has_<name>, whichever the installed ggml-python exposes, in display order.
GGML_FEATURES = (
    "sse3",
    "ssse3",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx_vnni",
    "avx512",
    "avx512_vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "neon",
    "arm_fma",
    "fp16_va",
    "dotprod",
    "matmul_int8",
    "i8mm",
    "sve",
    "sme",
    "riscv_v",
    "vsx",
    "wasm_simd",
    "blas",
    "llamafile",
)
PACKAGES = ("python", "numpy", "ggml-python", "pocket-ggml", "gguf")


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> list[dict[str, str]]:
    """The processor blocks of /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    blocks, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, _, value = line.partition(":")
        cur[key.strip()] = value.strip()
    if cur:
        blocks.append(cur)
    return blocks


def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, object]:
    """CPU model, logical and physical core counts, the CPUs this process may run on, ISA flags."""
    blocks = read_cpuinfo(path)
    first = blocks[0] if blocks else {}
    model = first.get("model name") or first.get("Model") or first.get("cpu model") or platform.processor()
    flags = set((first.get("flags") or first.get("Features") or "").split())
    cores = {(b.get("physical id", "0"), b.get("core id", str(i))) for i, b in enumerate(blocks)}
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = list(range(os.cpu_count() or 1))
    return {
        "model": model or "unknown",
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count() or len(blocks) or 1,
        "physical_cores": len(cores) if blocks else None,
        "allowed_cpus": affinity,
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
        "cache": first.get("cache size"),
        "os": platform.platform(),
    }


def ggml_features() -> dict[str, bool]:
    """The CPU features the installed ggml build uses (`ggml.ggml_cpu_has_*`), where they exist.

    Imports ggml (through the binding, which sets its environment up first)."""
    from pocket_ggml.ggml_binding import ggml

    out = {}
    for name in GGML_FEATURES:
        fn = getattr(ggml, f"ggml_cpu_has_{name}", None)
        if fn is not None:
            try:
                out[name] = bool(fn())
            except Exception:  # an exported symbol the library lacks
                continue
    return out


def ggml_features_line(features: dict[str, bool]) -> str:
    """One line: the features in use, then those the build lacks."""
    on = [k.upper() for k, v in features.items() if v]
    off = [k.upper() for k, v in features.items() if not v]
    return f"ggml CPU features: {' '.join(on) or 'none'} | not used: {' '.join(off) or 'none'}"


def repack_line() -> str:
    """Which FlowLM matrix types this build repacks (ggml's CPU_REPACK: Q4_0/Q4_K with AVX2; with ARM
    dotprod/i8mm also Q8_0, Q5_K and Q6_K)."""
    from pocket_ggml.format.ggml_types import GGMLType
    from pocket_ggml.ggml_binding import repackable

    types = [
        t.name
        for t in (
            GGMLType.Q4_K,
            GGMLType.Q5_K,
            GGMLType.Q6_K,
            GGMLType.Q8_0,
        )
        if repackable(int(t), (8, 256))
    ]
    if types:
        return f"CPU_REPACK: yes, {'/'.join(types)} FlowLM matrices are repacked for the interleaved matmul kernels"
    return "CPU_REPACK: no kernel on this CPU, quantized matmuls read the plain layout"


def package_version(name: str) -> str | None:
    if name == "python":
        return platform.python_version()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    return {n: package_version(n) for n in names} | {"python_executable": sys.executable}


def load_average() -> tuple[float, float, float] | None:
    """/proc/loadavg's 1, 5 and 15 minute averages (runnable processes), where it exists."""
    try:
        a, b, c = Path("/proc/loadavg").read_text().split()[:3]
        return float(a), float(b), float(c)
    except (OSError, ValueError):
        return None
