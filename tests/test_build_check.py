"""A ggml build without LLAMAFILE is named once at model load, with the reinstall command for this CPU's
preset, and in pocket-bench's report and --info. This machine's build has LLAMAFILE (CI asserts it), so
the slow build is simulated by replacing the detection function."""

from __future__ import annotations

import importlib.metadata
import logging
import shlex
import subprocess
from pathlib import Path

import pytest
from _parity_runs import synthetic_model
from click.testing import CliRunner

from pocket_ggml import ggml_binding, ggml_presets
from pocket_ggml.bench.report import markdown
from pocket_ggml.cli.bench import main as bench_main
from pocket_ggml.runtime import build_check
from pocket_ggml.runtime.model import PocketRuntime

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def slow_build(monkeypatch):
    monkeypatch.setattr(ggml_binding, "has_llamafile", lambda: False)
    monkeypatch.setattr(build_check, "_warned", type(build_check._warned)())  # a fresh "once"


def _reinstall_args(note: str) -> tuple[str, list[str]]:
    """(CMAKE_ARGS, the rest of the command as argv) of the command in a note."""
    words = shlex.split(note.split("preset): ", 1)[1])
    assert words[0].startswith("CMAKE_ARGS=")
    return words[0].removeprefix("CMAKE_ARGS="), words[1:]


def test_the_real_build_is_the_fast_one():
    assert ggml_binding.has_llamafile()
    assert build_check.slow_build_note() is None


def test_slow_build_is_warned_once_at_load_with_the_reinstall_command(slow_build, caplog):
    path = synthetic_model("english_2m_2026-10", "Q4_K_M")[1]
    with caplog.at_level(logging.WARNING, logger=build_check.__name__):
        for _ in range(2):
            PocketRuntime(path).close()
    warnings = [r.getMessage() for r in caplog.records if r.name == build_check.__name__]
    assert len(warnings) == 1
    note = warnings[0]
    assert "without LLAMAFILE" in note
    preset = ggml_presets.preset_for_this_cpu()
    assert f"({preset} preset)" in note
    cmake, argv = _reinstall_args(note)
    assert cmake == ggml_presets.cmake_args(preset) and "-DGGML_LLAMAFILE=ON" in cmake.split()
    version = importlib.metadata.version("ggml-python")
    assert argv[1:4] == ["-m", "pip", "install"]
    assert {"--force-reinstall", "--no-deps", "--no-cache-dir"} <= set(argv)
    assert argv[argv.index("--no-binary") + 1] == "ggml-python" and argv[-1] == f"ggml-python=={version}"


@pytest.mark.parametrize(
    ("machine", "features", "preset"),
    [
        ("x86_64", set(), "x86-native"),
        ("aarch64", {"fp", "asimd", "asimdhp", "asimddp", "i8mm"}, "phone"),
        ("aarch64", {"fp", "asimd", "asimdhp", "asimddp"}, "pi5"),
        ("aarch64", {"fp", "asimd", "crc32"}, "pi4"),
        ("riscv64", set(), None),
    ],
)
def test_preset_for_the_cpu(machine, features, preset):
    assert ggml_presets.preset_for_this_cpu(machine, features) == preset


def test_the_script_prints_the_packages_table():
    for name in ggml_presets.PRESETS:
        out = subprocess.run(
            ["bash", str(REPO / "scripts" / "ggml-preset.sh"), name], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == ggml_presets.cmake_args(name)
    bad = subprocess.run(
        ["bash", str(REPO / "scripts" / "ggml-preset.sh"), "nope"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "x86-native" in bad.stderr


def test_pocket_bench_info_names_a_slow_build(slow_build):
    r = CliRunner().invoke(bench_main, ["--info"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("ggml CPU features:") and lines[-1].startswith("SLOW BUILD: ")
    assert ggml_presets.cmake_args(ggml_presets.preset_for_this_cpu()) in lines[-1]


def test_pocket_bench_report_header_carries_it():
    from test_bench_plot import synthetic_report

    doc = synthetic_report()
    assert "SLOW BUILD" not in markdown(doc)
    doc["hardware"]["ggml_slow_build"] = "ggml-python was built without LLAMAFILE ..."
    header = markdown(doc).split("\n\n")[0]
    assert "**SLOW BUILD**: ggml-python was built without LLAMAFILE" in header
