"""`pocket-bench --plot`: the picture of a report, drawn from a small synthetic report (no benchmark
run), and the clear error without matplotlib."""

from __future__ import annotations

import builtins
import struct
import sys

import pytest
from click.testing import CliRunner

from pocket_ggml.bench.plot import plot_report
from pocket_ggml.bench.report import RECORD_FIELDS, STAGES, markdown, ratios
from pocket_ggml.cli.bench import main as bench_main
from pocket_ggml.errors import PlotUnavailable


def _record(backend: str, variant: str, threads: int, rf: float, stages_ms: tuple[float, ...]) -> dict:
    frames, audio = 125, 10.0
    wall = audio / rf
    rec: dict = {f: 1.0 for f in RECORD_FIELDS}
    rec.update(
        backend=backend,
        variant=variant,
        threads=threads,
        mimi_threads=threads,
        cores=[0, 1],
        weights_kind="synthetic",
        frames=frames,
        audio_s=audio,
        runs=3,
        realtime_factor=rf,
        realtime_factor_min=rf * 0.9,
        realtime_factor_max=rf * 1.05,
        rtf=1 / rf,
        rtf_min=1 / (rf * 1.05),
        rtf_max=1 / (rf * 0.9),
        wall_s=wall,
        stage_method="synthetic",
        roof_method="synthetic",
        model_file_format="gguf" if backend == "pocket-ggml" else "safetensors",
        text_tokens=65,
        ggml_threads=[threads, threads, 2] if backend == "pocket-ggml" else None,
        **{f"{s}_ms": ms for s, ms in zip(STAGES, stages_ms)},
    )
    return rec


def synthetic_report() -> dict:
    """A pocket-bench document shaped as a real `--reference --threads 1,2` run, with made-up figures."""
    results = [
        _record("pocket-ggml", "Q4_K_M", 1, 9.1, (2.6, 0.3, 1.9, 4.0)),
        _record("pocket-tts", "fp32", 1, 3.2, (14.0, 1.1, 6.5, 12.0)),
        _record("pocket-tts", "int8", 1, 6.9, (6.0, 0.8, 3.9, 7.5)),
        _record("pocket-ggml", "Q4_K_M", 2, 12.4, (1.6, 0.2, 1.2, 2.6)),
        _record("pocket-tts", "fp32", 2, 2.5, (9.0, 0.9, 4.4, 8.1)),
        _record("pocket-tts", "int8", 2, 4.3, (4.1, 0.6, 2.8, 5.2)),
    ]
    return {
        "schema": "pocket-bench/1",
        "hardware": {
            "model": "Synthetic CPU",
            "machine": "x86_64",
            "logical_cpus": 2,
            "physical_cores": 2,
            "isa_flags": ["avx2"],
            "ggml_features": {"avx2": True, "llamafile": True},
            "ggml_slow_build": None,
        },
        "versions": {"python": "3.11", "pocket-ggml": "0.1.0"},
        "model": {"config": "english", "quant_mix": "Q4_K_M", "weights_kind": "synthetic"},
        "settings": {"frames": 125, "runs": 3, "cores": [0, 1], "omp_wait_policy": "passive"},
        "results": results,
        "ratios": ratios(results),
    }


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_of_a_synthetic_report(tmp_path):
    out = plot_report(synthetic_report(), tmp_path / "bench.png")
    assert out == tmp_path / "bench.png"
    width, height = _png_size(out)
    assert width >= 1000 and height >= 500
    assert out.stat().st_size > 30_000  # two panels of bars and text, not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["bench.png"]  # no temporary file left


def test_the_synthetic_report_renders_as_markdown_too():
    text = markdown(synthetic_report())
    assert "| **realtime factor**" in text and "pocket-tts int8" in text


def test_missing_matplotlib_is_exit_2_before_any_benchmark(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(PlotUnavailable, match=r"pocket-ggml\[plot\]"):
        plot_report(synthetic_report(), tmp_path / "x.png")
    r = CliRunner().invoke(bench_main, ["--plot", str(tmp_path / "x.png"), "--frames", "2"])
    assert r.exit_code == 2
    assert "needs matplotlib" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.png").exists()


def test_plot_into_a_missing_folder_is_exit_2(tmp_path):
    r = CliRunner().invoke(bench_main, ["--plot", str(tmp_path / "nope" / "x.png"), "--frames", "2"])
    assert r.exit_code == 2 and "does not exist" in r.output
