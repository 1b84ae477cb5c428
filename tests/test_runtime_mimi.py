"""The Mimi runtime (MimiDecoder, MimiEncoder) against pocket-tts 4.0.1 end to end, on synthetic F32
models that both sides load: ../shared/reference/run_reference.py generates from them and dumps every
Mimi stage; our decoder is teacher-forced with the reference's latents, one frame per call, and our
encoder gets the reference's prepared voice prompt (and the wav file itself)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _ggml_parity import REL_TOL, rel_err
from _parity_runs import SEED, Dump, reference_run, synthetic_model

from pocket_ggml.errors import AudioError, LatentError, VoiceCloningUnavailable
from pocket_ggml.format.config import load_released_config
from pocket_ggml.format.tokenizer import read_tokenizer
from pocket_ggml.quantize.convert import convert
from pocket_ggml.quantize.policy import get_mix
from pocket_ggml.runtime.ggml_backend import CpuBackend, WeightStore
from pocket_ggml.runtime.mimi import ENCODER_CHUNK_FRAMES, MimiDecoder, MimiEncoder, MimiHidden
from pocket_ggml.runtime.model_file import ModelFile
from pocket_ggml.voices.audio import prepare_voice_prompt, read_audio

CONFIGS = ["english", "english_2m_2026-10"]
TEMPS = [0.0, 0.3]
FRAMES = 10  # the runs test_parity.py makes, so that a whole session makes them once
MIN_SNR_DB = 60.0  # per 80 ms chunk, the faded first one included (measured 121-123 dB)
LONG_RUN_FRAMES = 320  # 25.6 s: 5120 decoder-transformer steps through a 65-slot ring (english_2m)
# A KV cache that grew with the audio would add 64 KB a frame on english_2m (20 MB here); measured
# growth is ~0.2 MB (Python's allocator).
MAX_RSS_GROWTH = 4e6
DECODER_STAGES = (
    "mimi_dec_latent_in",
    "mimi_dec_quantizer_out",
    "mimi_dec_upsample_out",
    "mimi_dec_transformer_out",
    "mimi_dec_seanet_out",
)
ENCODER_STAGES = ("voice_mimi_seanet_out", "voice_mimi_transformer_out", "voice_mimi_latents")


@pytest.fixture(scope="module")
def dumps() -> dict[tuple[str, float], Dump]:
    """The reference's dumps of every (config, temp), run side by side: each run spends ~7 s importing
    torch and pocket_tts, and the machine has cores to spare while it does."""
    for config in CONFIGS:  # written once, before the runs that read them
        synthetic_model(config, safetensors=True)
    runs = [(config, temp) for config in CONFIGS for temp in TEMPS]
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {run: pool.submit(reference_run, run[0], temp=run[1], frames=FRAMES) for run in runs}
        return {run: f.result() for run, f in futures.items()}


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def _model(config: str, backend: CpuBackend) -> tuple[ModelFile, WeightStore]:
    mf = ModelFile(synthetic_model(config)[1])
    return mf, mf.load_weights(backend)


def snr_db(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((np.asarray(ours, dtype=np.float64) - ref) ** 2)))


@pytest.mark.parametrize("temp", TEMPS)
@pytest.mark.parametrize("config", CONFIGS)
def test_decoder_matches_reference_frame_by_frame_f32(dumps, backend, config, temp):
    dump = dumps[config, temp]
    mf, weights = _model(config, backend)
    decoder = MimiDecoder(mf.config, weights, backend)
    latents, chunks = dump["step_latent"], dump["audio_chunks"]
    refs = {name: dump[name] for name in DECODER_STAGES}
    refs["mimi_dec_latent_in"] = refs["mimi_dec_latent_in"][:, None]  # the dump joins the calls' rows
    assert latents.shape == (FRAMES, mf.config.mimi.latent_dim)
    for i in range(FRAMES):
        audio, stages = decoder.decode(latents[i : i + 1], stages=True)
        assert set(stages) == set(DECODER_STAGES)
        for name, ref in refs.items():
            assert rel_err(stages[name], ref[i]) <= REL_TOL, f"frame {i} {name}: {rel_err(stages[name], ref[i]):.2e}"
        assert audio.shape == (mf.config.mimi.frame_size,)
        assert snr_db(audio, chunks[i]) >= MIN_SNR_DB, f"frame {i}: {snr_db(audio, chunks[i]):.1f} dB"


def test_decoder_reset_reproduces_the_same_audio(dumps, backend):
    config = "english_2m_2026-10"
    mf, weights = _model(config, backend)
    decoder = MimiDecoder(mf.config, weights, backend)
    latents = dumps[config, 0.3]["step_latent"]
    first = [decoder.decode(latents[i : i + 1]) for i in range(FRAMES)]
    decoder.reset()
    again = [decoder.decode(latents[i : i + 1], stages=True) for i in range(FRAMES)]
    assert all(np.array_equal(a, b) for a, (b, _) in zip(first, again))
    fade = np.linspace(0, 1, mf.config.mimi.sample_rate // 200, dtype=np.float32)
    (audio, stages), (later, later_stages) = again[:2]
    assert np.array_equal(audio[: fade.size], stages["mimi_dec_seanet_out"][: fade.size] * fade)
    assert np.array_equal(audio[fade.size :], stages["mimi_dec_seanet_out"][fade.size :])
    assert np.array_equal(later, later_stages["mimi_dec_seanet_out"])  # only the first call after reset fades


def test_decoder_several_frames_per_call_matches_reference(dumps, backend):
    """Calls of 1-3 frames (the reference's thread decodes whatever is queued) give the same audio."""
    config = "english_2m_2026-10"
    mf, weights = _model(config, backend)
    decoder = MimiDecoder(mf.config, weights, backend, max_frames_per_call=3)
    dump = dumps[config, 0.3]
    bounds = np.cumsum([0, 1, 3, 2, 3, 1])
    assert bounds[-1] == FRAMES
    audio = np.concatenate([decoder.decode(dump["step_latent"][a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    assert snr_db(audio, dump["waveform"]) >= MIN_SNR_DB


def test_decoder_halves_on_two_threads_give_decode_audio(dumps, backend):
    """`first_half` on one thread and `second_half` on another, pipelined as generate_audio_stream runs
    them, give exactly `decode`'s audio (the same graphs on the same state)."""
    config = "english_2m_2026-10"
    mf, weights = _model(config, backend)
    latents = dumps[config, 0.3]["step_latent"]
    whole = MimiDecoder(mf.config, weights, backend)
    expected = [whole.decode(latents[i : i + 1]) for i in range(FRAMES)]
    halves = MimiDecoder(mf.config, weights, backend)
    with ThreadPoolExecutor(1) as worker:
        hidden = [worker.submit(halves.first_half, latents[i : i + 1]) for i in range(FRAMES)]
        audio = [halves.second_half(h.result()) for h in hidden]
    assert all(np.array_equal(a, b) for a, b in zip(audio, expected))
    good = halves.first_half(latents[:1])
    width = good.steps.shape[1]
    for bad in (
        np.zeros(width, np.float32),  # not (steps, channels)
        np.zeros((16, 3), np.float32),
        np.zeros((0, width), np.float32),
        np.full((16, width), np.inf, np.float32),
        np.zeros((16, width), np.int32),
    ):
        with pytest.raises(LatentError):
            halves.second_half(MimiHidden(bad, good.plan))
    with pytest.raises(LatentError):
        halves.second_half(good.steps)  # the steps without their attention plan
    with pytest.raises(LatentError):
        halves.second_half(MimiHidden(good.steps[:8], good.plan))  # a plan for other steps


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_decoder_memory_does_not_grow_with_audio_length(backend):
    mf, weights = _model("english_2m_2026-10", backend)
    decoder = MimiDecoder(mf.config, weights, backend)
    shapes = {name: decoder.state.shape(name) for name in decoder.state}
    latents = np.random.default_rng(0).standard_normal((LONG_RUN_FRAMES, mf.config.mimi.latent_dim), np.float32)
    for i in range(16):
        decoder.decode(latents[i : i + 1])
    rss = _rss_bytes()
    for i in range(16, LONG_RUN_FRAMES):
        audio = decoder.decode(latents[i : i + 1])
        assert np.isfinite(audio).all(), f"frame {i}"
    assert _rss_bytes() - rss <= MAX_RSS_GROWTH
    assert {name: decoder.state.shape(name) for name in decoder.state} == shapes
    assert all(np.isfinite(decoder.state.get(name)).all() for name in decoder.state)
    assert float(audio.std()) > 0.01


def test_encoder_matches_reference_f32(dumps, backend):
    """On the reference's prepared prompt: 6.96 s, several chunks, past the 250-step window. (The encoders
    of english and english_2m have the same config and synthetic weights: one is tested.)"""
    dump = dumps["english", 0.0]
    mf, weights = _model("english", backend)
    audio = dump["voice_audio_in"][0, 0]
    latents, stages = MimiEncoder(mf.config, weights, backend).encode(audio, stages=True)
    assert latents.shape == (audio.size // mf.config.mimi.frame_size, mf.config.mimi.speaker_dim)
    assert set(stages) == set(ENCODER_STAGES)
    for name in ENCODER_STAGES:
        ref = dump[name][0]
        assert rel_err(stages[name], ref) <= REL_TOL, f"{name}: {rel_err(stages[name], ref):.2e}"


@pytest.mark.parametrize("frames", [1, ENCODER_CHUNK_FRAMES + 1])
def test_encoder_short_prompts_give_the_reference_prefix(dumps, backend, frames):
    """The encoder is causal, so a prompt's first frames encode to the first latents of the whole
    prompt: covers a prompt shorter than a chunk and a last chunk of one frame."""
    dump = dumps["english", 0.0]
    mf, weights = _model("english", backend)
    audio = dump["voice_audio_in"][0, 0, : frames * mf.config.mimi.frame_size]
    latents = MimiEncoder(mf.config, weights, backend).encode(audio)
    assert rel_err(latents, dump["voice_mimi_latents"][0, :, :frames].T) <= REL_TOL


def test_voice_prompt_from_wav_gives_reference_latents(dumps, backend, voice_wav):
    """read -> prepare_voice_prompt -> encode, from the 48 kHz file."""
    config = "english_2m_2026-10"
    mf, weights = _model(config, backend)
    m = mf.config.mimi
    wav, rate = read_audio(voice_wav)
    encoder = MimiEncoder(mf.config, weights, backend)
    latents = encoder.encode(prepare_voice_prompt(wav, rate, m.sample_rate, m.frame_size))
    assert rel_err(latents, dumps[config, 0.0]["voice_mimi_latents"][0].T) <= REL_TOL


def test_bad_inputs_raise_pocket_errors(backend):
    mf, weights = _model("english_2m_2026-10", backend)
    m = mf.config.mimi
    decoder = MimiDecoder(mf.config, weights, backend, max_frames_per_call=2)
    for bad in (
        np.zeros((3, m.latent_dim), np.float32),
        np.zeros((0, m.latent_dim), np.float32),
        np.zeros((1, m.latent_dim + 1), np.float32),
        np.zeros(m.latent_dim, np.float32),
        np.full((1, m.latent_dim), np.nan, np.float32),
        np.zeros((1, m.latent_dim), np.int32),
    ):
        with pytest.raises(LatentError):
            decoder.decode(bad)
    encoder = MimiEncoder(mf.config, weights, backend)
    frame = m.frame_size
    nan = np.zeros(frame, np.float32)
    nan[5] = np.nan
    for bad in (np.zeros(0, np.float32), np.zeros(frame + 1, np.float32), np.zeros((1, frame), np.float32), nan):
        with pytest.raises(AudioError):
            encoder.encode(bad)


def test_encoder_needs_a_model_with_encoder(tmp_path, tokenizer_path, backend):
    cfg = load_released_config("english_2m_2026-10")
    path = tmp_path / "no-encoder.gguf"
    tok = read_tokenizer(tokenizer_path, cfg.flow_lm.n_bins)
    convert(cfg, path, get_mix("F32"), tok, synthetic_seed=SEED, keep_encoder=False)
    mf = ModelFile(path)
    assert not mf.info.has_encoder
    with pytest.raises(VoiceCloningUnavailable, match="no Mimi encoder"):
        MimiEncoder(mf.config, mf.load_weights(backend), backend)
