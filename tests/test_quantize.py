"""pocket-quantize: round trips, quantization error bounds, metadata, gguf-dump, bad input, atomicity."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from _cli import assert_refused_in_one_line
from _cli import run_cli as run_subprocess
from click.testing import CliRunner
from gguf import GGMLQuantizationType as T

from pocket_ggml.cli.quantize import main as quantize_cli
from pocket_ggml.errors import ModelFileError
from pocket_ggml.format.config import load_released_config
from pocket_ggml.format.names import expected_tensors, from_released
from pocket_ggml.format.tokenizer import read_tokenizer, synthetic_tokenizer, synthetic_tokenizer_record
from pocket_ggml.quantize import convert as convert_module
from pocket_ggml.quantize.convert import convert
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.quantize.synthetic import synthetic_tensors
from pocket_ggml.runtime.model_file import ModelFile

# Relative RMS error of dequantize(quantize(W)) on synthetic (uniform / normal) weights; ggml's own
# kernels measure Q8_0 0.5 %, Q6_K 1.8 %, Q5_K 3.6 %, Q4_K 7.1 % (../shared/docs/ggml-python-notes.md).
MAX_REL_RMS = {T.F32: 0.0, T.F16: 1e-3, T.Q8_0: 1e-2, T.Q6_K: 2.5e-2, T.Q5_K: 5e-2, T.Q4_K: 9e-2}
ROUND_TRIP_CONFIGS = ["english", "english_2m_2026-10", "english_7m_2026-10", "english_2026-04_24l"]


def run_cli(*args: str):
    return CliRunner().invoke(quantize_cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth")


def _synthetic_gguf(synth_dir: Path, tokenizer_path: Path, config: str, mix: str, **kw) -> Path:
    out = synth_dir / f"{config}-{mix}.gguf"
    if not out.exists():
        cfg = load_released_config(config)
        convert(cfg, out, get_mix(mix), read_tokenizer(tokenizer_path, cfg.flow_lm.n_bins), synthetic_seed=0, **kw)
    return out


@pytest.mark.parametrize("config", ROUND_TRIP_CONFIGS)
def test_every_tensor_round_trips(synth_dir, tokenizer_path, config):
    """F32 is bit-exact; the 24-layer config (1.3 GB at F32) goes through F16 to keep CI fast."""
    mix = "F16" if config.endswith("_24l") else "F32"
    mf = ModelFile(_synthetic_gguf(synth_dir, tokenizer_path, config, mix))
    cfg = load_released_config(config)
    assert mf.config == cfg
    got = mf.released_state_dict()
    assert list(got) == list(expected_tensors(cfg))
    for name, ref in synthetic_tensors(cfg, seed=0):
        if mf.tensor_type(from_released(name).gguf) == T.F16:
            ref = ref.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(got[name], ref, err_msg=name)


@pytest.mark.parametrize("mix", ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"])
def test_dequantized_error_within_bounds(synth_dir, tokenizer_path, mix):
    out = synth_dir / f"err-{mix}.gguf"
    cfg = load_released_config("english")
    result = convert(cfg, out, get_mix(mix), read_tokenizer(tokenizer_path, 4000), synthetic_seed=0, measure_error=True)
    seen = set()
    for r in result.tensors:
        seen.add(r.qtype)
        assert r.rel_rms_error <= MAX_REL_RMS[r.qtype], (r.gguf_name, r.qtype.name, r.rel_rms_error)
    mf = ModelFile(out)
    for r in result.tensors[:40]:  # the file holds what the report measured
        assert mf.tensor_type(r.gguf_name) == r.qtype
    assert T.F32 in seen and (T.Q8_0 in seen)


def test_mix_policy_places_sensitive_tensors_higher(synth_dir, tokenizer_path):
    mf = ModelFile(_synthetic_gguf(synth_dir, tokenizer_path, "english", "Q4_K_M"))
    assert mf.tensor_type("lm.blk.0.ffn_up.weight") == T.Q4_K
    assert mf.tensor_type("lm.blk.0.attn_out.weight") == T.Q8_0  # the most sensitive matrix
    assert mf.tensor_type("mimi.dec.seanet.0.conv.weight") == T.F16
    assert mf.tensor_type("lm.blk.0.attn_norm.weight") == T.F32
    assert mf.tensor_type("mimi.dec.upsample.weight") == T.F32
    assert mf.tensor_type("flow.input_proj.weight") == T.Q8_0  # rows of 32: Q6_K falls back
    q5 = _synthetic_gguf(synth_dir, tokenizer_path, "english", "Q5_K_M")
    mf5 = ModelFile(q5)
    assert [mf5.tensor_type(f"lm.blk.{i}.ffn_down.weight") for i in range(6)] == [
        T.Q5_K,
        T.Q5_K,
        T.Q6_K,
        T.Q5_K,
        T.Q5_K,
        T.Q6_K,
    ]


def test_fallback_for_rows_that_are_not_a_block_multiple(synth_dir, tokenizer_path):
    mf = ModelFile(_synthetic_gguf(synth_dir, tokenizer_path, "english_7m_2026-10", "Q4_K_M"))
    assert mf.tensor_type("lm.blk.0.ffn_up.weight") == T.Q8_0  # rows of 224
    assert mf.tensor_type("lm.blk.0.attn_out.weight") == T.Q8_0  # rows of 512: the mix says Q8_0
    assert mf.tensor_type("mimi.enc.seanet.0.conv.weight") == T.F16  # rows of 1*7


def test_metadata_round_trip(synth_dir, tokenizer_path):
    mf = ModelFile(_synthetic_gguf(synth_dir, tokenizer_path, "english_2m_2026-10", "F32"))
    assert mf.info.weights_kind == "synthetic" and mf.info.synthetic_seed == 0 and mf.info.has_encoder
    assert mf.info.quant_mix == "F32" and mf.info.tokenizer_kind == "sentencepiece"
    assert mf.tokenizer_bytes() == tokenizer_path.read_bytes()
    assert mf.config.generation.eos_threshold == -1.0
    assert dict(mf.config.text.replace_characters)["\u2014"] == ","
    # a config with deletions ("" replacements) and other text rules
    out = synth_dir / "dutch-meta.gguf"
    cfg = load_released_config("english_2026-01")
    convert(cfg, out, get_mix("Q8_0"), read_tokenizer(tokenizer_path, 4000), synthetic_seed=3, keep_encoder=False)
    mf = ModelFile(out)
    assert mf.config == cfg and not mf.info.has_encoder and mf.config.text.pad_with_spaces_for_short_inputs
    cfg_nl = load_released_config("dutch")
    out_nl = synth_dir / "nl.gguf"
    convert(
        cfg_nl, out_nl, get_mix("Q4_K_M"), read_tokenizer(tokenizer_path, 4000), synthetic_seed=1, keep_encoder=False
    )
    assert ModelFile(out_nl).config == cfg_nl and dict(cfg_nl.text.replace_characters)["("] == ""


def test_gguf_dump_reads_the_file(synth_dir, tokenizer_path):
    path = _synthetic_gguf(synth_dir, tokenizer_path, "english", "Q4_K_M")
    dump = Path(sys.executable).with_name("gguf-dump")
    r = subprocess.run([str(dump), str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "general.architecture = 'pocket-tts'" in r.stdout
    assert "lm.blk.5.attn_qkv.weight" in r.stdout and "Q4_K" in r.stdout
    assert "mimi.enc.downsample.weight" in r.stdout


def test_synthetic_weights_are_deterministic(synth_dir):
    cfg = load_released_config("english_2m_2026-10")
    tok = synthetic_tokenizer_record(4000)
    digests = []
    for i, seed in enumerate((5, 5, 6)):
        out = synth_dir / f"det{i}.gguf"
        convert(cfg, out, get_mix("Q4_K_M"), tok, synthetic_seed=seed)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_checkpoint_path_equals_synthetic_path(tmp_path, tokenizer_path):
    """--save-safetensors writes the released layout; converting it gives the same GGUF tensors."""
    st, direct, via = tmp_path / "w.safetensors", tmp_path / "direct.gguf", tmp_path / "via.gguf"
    r = run_cli(
        "--synthetic",
        "english_7m_2026-10",
        "--seed",
        "2",
        "-o",
        str(direct),
        "--type",
        "Q4_K_M",
        "--tokenizer",
        str(tokenizer_path),
        "--save-safetensors",
        str(st),
        "-q",
    )
    assert r.exit_code == 0, r.output
    r = run_cli(str(st), "--tokenizer", str(tokenizer_path), "-o", str(via), "--type", "Q4_K_M")
    assert r.exit_code == 0, r.output
    a, b = ModelFile(direct), ModelFile(via)
    assert a.config == b.config and a.info.weights_kind == "synthetic" and b.info.weights_kind == "released"
    for name in a.tensors:
        assert np.array_equal(np.asarray(a.raw(name)), np.asarray(b.raw(name))), name


def test_bf16_and_mixed_dtype_checkpoint(tmp_path, tokenizer_path):
    torch = pytest.importorskip("torch") if not _in_ci() else __import__("torch")
    import safetensors.torch

    cfg = load_released_config("english_2m_2026-10")
    tensors = dict(synthetic_tensors(cfg, seed=4))
    mixed = {
        k: torch.from_numpy(v).to(torch.bfloat16 if i % 2 else torch.float32)
        for i, (k, v) in enumerate(tensors.items())
    }
    path = tmp_path / "mixed.safetensors"
    safetensors.torch.save_file(mixed, str(path))
    out = tmp_path / "mixed.gguf"
    r = run_cli(
        str(path), "--config", "english_2m_2026-10", "--tokenizer", str(tokenizer_path), "-o", str(out), "--type", "F32"
    )
    assert r.exit_code == 0, r.output
    got = ModelFile(out).released_state_dict()
    for k, v in mixed.items():
        np.testing.assert_array_equal(got[k], v.to(torch.float32).numpy(), err_msg=k)


def _in_ci() -> bool:
    from _reference import IN_CI

    return IN_CI


def test_checkpoint_without_voice_cloning(tmp_path, tokenizer_path):
    cfg = load_released_config("english_2m_2026-10")
    no_enc = set(expected_tensors(cfg, with_encoder=False))
    path = tmp_path / "no-cloning.safetensors"
    safetensors.numpy.save_file({k: v for k, v in synthetic_tensors(cfg, 0) if k in no_enc}, str(path))
    out = tmp_path / "nc.gguf"
    r = run_cli(str(path), "--config", "english_2m_2026-10", "--tokenizer", str(tokenizer_path), "-o", str(out))
    assert r.exit_code == 0, r.output
    mf = ModelFile(out)
    assert not mf.info.has_encoder and "lm.speaker_proj.weight" not in mf.tensors


def test_no_encoder_and_overrides(tmp_path, tokenizer_path):
    out = tmp_path / "o.gguf"
    r = run_cli(
        "--synthetic",
        "english_2m_2026-10",
        "-o",
        str(out),
        "--no-encoder",
        "--type",
        "F32",
        "--tensor-type",
        r"lm\.blk\.[0-3]\.attn_out=Q8_0",
        "--tensor-type",
        r"norm=Q4_K",
        "--report",
    )
    assert r.exit_code == 0, r.output
    mf = ModelFile(out)
    assert not mf.info.has_encoder and not any(n.startswith("mimi.enc.") for n in mf.tensors)
    assert mf.tensor_type("lm.blk.0.attn_out.weight") == T.Q8_0 and mf.tensor_type("lm.blk.4.attn_out.weight") == T.F32
    assert mf.tensor_type("lm.blk.0.attn_qkv.weight") == T.F32
    assert mf.tensor_type("lm.blk.0.attn_norm.weight") == T.F32  # vectors stay F32 whatever the override
    assert "rel. RMS error" in r.output and "| Q8_0 |" in r.output


# ------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2, nothing written
# ------------------------------------------------------------------------------------------------
def _write_checkpoint(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    safetensors.numpy.save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def small_tensors() -> dict[str, np.ndarray]:
    return dict(synthetic_tensors(load_released_config("english_2m_2026-10"), 0))


def _bad_cases(tmp: Path, tok: Path, small: dict[str, np.ndarray]):
    good = _write_checkpoint(tmp / "good.safetensors", small)
    missing = dict(small)
    missing.pop("flow_lm.out_eos.bias")
    extra = dict(small, **{"flow_lm.surprise.weight": np.zeros((2, 2), np.float32)})
    misshaped = dict(small, **{"flow_lm.input_linear.weight": np.zeros((3, 3), np.float32)})
    (tmp / "garbage.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    (tmp / "text.safetensors").write_text("hello, I am not a checkpoint\n")
    small_tok = tmp / "small.model"
    small_tok.write_bytes(synthetic_tokenizer(3000))
    base = ["--config", "english_2m_2026-10", "--tokenizer", str(tok)]
    return {
        "unknown config": ["--synthetic", "english_99m", "-o", str(tmp / "x.gguf")],
        "unknown config for checkpoint": [
            str(good),
            "--config",
            "nope",
            "--tokenizer",
            str(tok),
            "-o",
            str(tmp / "x.gguf"),
        ],
        "missing tensor": [str(_write_checkpoint(tmp / "m.safetensors", missing)), *base, "-o", str(tmp / "x.gguf")],
        "extra tensor": [str(_write_checkpoint(tmp / "e.safetensors", extra)), *base, "-o", str(tmp / "x.gguf")],
        "misshaped tensor": [
            str(_write_checkpoint(tmp / "s.safetensors", misshaped)),
            *base,
            "-o",
            str(tmp / "x.gguf"),
        ],
        "unreadable file": [str(tmp / "garbage.safetensors"), *base, "-o", str(tmp / "x.gguf")],
        "not safetensors": [str(tmp / "text.safetensors"), *base, "-o", str(tmp / "x.gguf")],
        "no such file": [str(tmp / "absent.safetensors"), *base, "-o", str(tmp / "x.gguf")],
        "wrong vocabulary": [
            str(good),
            "--config",
            "english_2m_2026-10",
            "--tokenizer",
            str(small_tok),
            "-o",
            str(tmp / "x.gguf"),
        ],
        "tokenizer not a model": [
            str(good),
            "--config",
            "english_2m_2026-10",
            "--tokenizer",
            str(tmp / "text.safetensors"),
            "-o",
            str(tmp / "x.gguf"),
        ],
        "destination folder missing": [str(good), *base, "-o", str(tmp / "nowhere" / "x.gguf")],
        "destination is a folder": [str(good), *base, "-o", str(tmp)],
        "unknown type": [str(good), *base, "-o", str(tmp / "x.gguf"), "--type", "Q3_K"],
        "bad override": [str(good), *base, "-o", str(tmp / "x.gguf"), "--tensor-type", "lm=Q9"],
        "bad override regex": [str(good), *base, "-o", str(tmp / "x.gguf"), "--tensor-type", "(=Q8_0"],
    }


def test_bad_inputs_exit_2_with_one_line(tmp_path, tokenizer_path, small_tensors):
    for case, args in _bad_cases(tmp_path, tokenizer_path, small_tensors).items():
        assert_refused_in_one_line(run_subprocess("quantize", *args), case)
        assert not (tmp_path / "x.gguf").exists(), case
    assert not list(tmp_path.glob(".*.part")), "temporary files left behind"


def test_failure_midway_keeps_the_previous_file(tmp_path, tokenizer_path, monkeypatch):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"previous model")
    calls = {"n": 0}
    real = convert_module._encode

    def failing_encode(array, qtype):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way
        return real(array, qtype)

    monkeypatch.setattr(convert_module, "_encode", failing_encode)
    cfg = load_released_config("english_2m_2026-10")
    with pytest.raises(KeyboardInterrupt):
        convert(cfg, out, get_mix("Q8_0"), read_tokenizer(tokenizer_path, 4000), synthetic_seed=0)
    assert out.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_model_file_rejects_non_pocket_gguf(tmp_path):
    import gguf

    p = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_tensor("x", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFileError, match="architecture"):
        ModelFile(p)
    (tmp_path / "trunc.gguf").write_bytes(p.read_bytes()[:40])
    with pytest.raises(ModelFileError):
        ModelFile(tmp_path / "trunc.gguf")
