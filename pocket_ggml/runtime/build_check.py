"""Whether the installed ggml is the fast build, and how to get it if not.

A plain `pip install ggml-python` compiles ggml without LLAMAFILE, whose sgemm runs every matmul of
16+ columns (all of the Mimi decoder) 1.5-2.8x faster. Nothing fails without it, so the runtime says so
once, at the first model load, with the command that rebuilds it for this CPU (`ggml_presets`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading

from pocket_ggml import ggml_binding, ggml_presets

logger = logging.getLogger(__name__)
_warned = threading.Event()


def slow_build_note() -> str | None:
    """None for a build with LLAMAFILE; else what is wrong and the reinstall command for this CPU."""
    if ggml_binding.has_llamafile():
        return None
    note = (
        "ggml-python was built without LLAMAFILE (as a plain `pip install ggml-python` builds it): "
        "the Mimi decoder runs 1.5-2.8x slower."
    )
    preset = ggml_presets.preset_for_this_cpu()
    if preset is None:
        return note + " Rebuild it from source with CMAKE_ARGS=-DGGML_LLAMAFILE=ON."
    try:
        version = importlib.metadata.version(ggml_presets.GGML_PYTHON)
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.45"  # the version pyproject.toml pins
    return f"{note} Rebuild it ({preset} preset): {ggml_presets.reinstall_command(preset, version)}"


def warn_if_slow_build() -> None:
    """Log `slow_build_note` as a warning, once per process."""
    if _warned.is_set():
        return
    _warned.set()
    note = slow_build_note()
    if note:
        logger.warning("%s", note)
