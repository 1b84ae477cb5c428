"""The report of one conversion: what each quantization type holds, the file's size against the input's,
and (when the errors were measured) each tensor's relative RMS quantization error. Markdown tables."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pocket_ggml.quantize.convert import ConversionResult


def conversion_summary(result: ConversionResult, per_tensor: bool) -> str:
    """The summary of `result`; `per_tensor` adds the table of every tensor's error (measured by `convert`
    with `measure_error=True`) and their parameter-weighted mean."""
    head = (
        f"{result.output}: {result.config.name}, {result.mix}, {result.weights_kind} weights, "
        f"encoder {'kept' if result.has_encoder else 'dropped'}, {result.seconds:.1f} s"
    )
    size = (
        f"file {result.output_bytes / 1e6:.1f} MB, {result.output_bytes / result.input_bytes:.3f} of the input "
        f"({result.input_bytes / 1e6:.1f} MB{', as F32' if result.weights_kind == 'synthetic' else ''})"
    )
    lines = [head, "", *_types_table(result), "", size]
    if per_tensor:
        lines += ["", *_errors_table(result)]
    return "\n".join(lines)


def _types_table(result: ConversionResult) -> list[str]:
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # tensors, parameters, bytes
    for r in result.tensors:
        row = by_type[r.qtype.name]
        row[0] += 1
        row[1] += r.n_params
        row[2] += r.n_bytes
    lines = ["| type | tensors | parameters | bytes |", "|---|---:|---:|---:|"]
    for name, (n, p, b) in sorted(by_type.items(), key=lambda kv: -kv[1][2]):
        lines.append(f"| {name} | {n} | {p:,} | {b:,} |")
    total_p = sum(r.n_params for r in result.tensors)
    lines.append(f"| **total** | {len(result.tensors)} | {total_p:,} | {result.output_bytes:,} (file) |")
    return lines


def _errors_table(result: ConversionResult) -> list[str]:
    lines = ["| tensor | type | shape | rel. RMS error |", "|---|---|---|---:|"]
    for r in result.tensors:
        err = "-" if r.rel_rms_error is None else f"{r.rel_rms_error:.2e}"
        lines.append(f"| {r.gguf_name} | {r.qtype.name} | {'x'.join(map(str, r.shape))} | {err} |")
    quantized = [r for r in result.tensors if r.rel_rms_error is not None and r.qtype.name != "F32"]
    if quantized:
        w = np.array([r.n_params for r in quantized], dtype=np.float64)
        e = np.array([r.rel_rms_error for r in quantized])
        lines.append(
            f"\nparameter-weighted mean rel. RMS error of non-F32 tensors: {float((w * e).sum() / w.sum()):.2e}"
        )
    return lines
