"""pocket_ggml's own GGUF type numbers agree with gguf-py's, and loading, cloning and speaking import neither
gguf-py (only writing GGUF files needs it) nor scipy (the voice-prompt resampler is numpy)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import gguf
from _parity_runs import synthetic_model

from pocket_ggml.format.ggml_types import QUANT_SIZES, FileType, GGMLType, GGUFValueType


def test_tensor_types_and_block_sizes_are_gguf_pys():
    assert {t.name: t.value for t in GGMLType} == {t.name: t.value for t in gguf.GGMLQuantizationType}
    assert {t.name: size for t, size in QUANT_SIZES.items()} == {
        t.name: size for t, size in gguf.GGML_QUANT_SIZES.items()
    }


def test_value_and_file_types_are_gguf_pys():
    assert {t.name: t.value for t in GGUFValueType} == {t.name: t.value for t in gguf.GGUFValueType}
    for t in FileType:
        assert gguf.LlamaFileType[t.name] == t.value


def test_loading_cloning_and_speaking_import_neither_gguf_py_nor_scipy(voice_wav, tmp_path):
    _, path = synthetic_model("english_2m_2026-10")
    script = textwrap.dedent(
        f"""
        import sys
        from pocket_ggml import TTSModel, save_voice_state
        model = TTSModel.load_model({str(path)!r}, temp=0.0)
        voice = model.get_state_for_audio_prompt({str(voice_wav)!r})
        save_voice_state(voice, {str(tmp_path / "voice.safetensors")!r})
        audio = model.generate_audio(voice, "Hello there.", max_tokens=20)
        assert audio.size > 0
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("gguf", "scipy")))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
