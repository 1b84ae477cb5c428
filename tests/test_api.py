"""The TTSModel API end to end on synthetic models."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf
from _ggml_parity import REL_TOL, rel_err
from _parity_runs import reference_run, synthetic_model

from pocket_ggml import BusyError, ParameterError, TTSModel, load_voice_state, save_voice_state
from pocket_ggml.errors import AudioError, ModelNotAvailable
from pocket_ggml.runtime.model import thread_plan
from pocket_ggml.runtime.text import prepare_text_prompt, split_into_best_sentences
from pocket_ggml.voices.store import synthetic_voice_audio

SMALL = "english_2m_2026-10"
TEXT = "Hello world. This is a test of the pocket runtime, with a second clause."
LONG = " ".join(f"Sentence number {i} talks about the weather and the sea." for i in range(12))


@pytest.fixture(scope="module")
def small():
    return TTSModel.load_model(synthetic_model(SMALL)[1], temp=0.0, eos_threshold=float("inf"))


@pytest.fixture(scope="module")
def small_voice(small, voice_wav):
    return small.get_state_for_audio_prompt(voice_wav)


def test_default_model_is_synthetic_english_with_a_stored_voice(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POCKET_GGML_CACHE", str(tmp_path_factory.mktemp("cache")))
    model = TTSModel.load_model()
    assert model.is_synthetic and model.config.name == "english" and model.sample_rate == 24000
    assert model.voice_names == ("synthetic",)
    voice = model.get_state_for_audio_prompt("synthetic")
    audio = model.generate_audio(voice, "Hello world.")
    assert audio.dtype == np.float32 and audio.size % 1920 == 0 and audio.size >= 7 * 1920
    assert np.isfinite(audio).all() and audio.std() > 1e-3


def test_length_is_frames_times_frame_size_and_streaming_equals_whole(small, small_voice):
    whole = small.generate_audio(small_voice, TEXT, seed=1)
    chunks = list(small.generate_audio_stream(small_voice, TEXT, seed=1))
    assert all(c.shape == (1920,) for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_temperature_sampling_is_seeded(tmp_path):
    model = TTSModel.load_model(synthetic_model(SMALL)[1], temp=0.3, eos_threshold=float("inf"))
    voice = model.get_state_for_audio_prompt(synthetic_voice_audio(24000), sample_rate=24000)
    a = model.generate_audio(voice, "Hi there.", seed=5)
    b = model.generate_audio(voice, "Hi there.", seed=5)
    c = model.generate_audio(voice, "Hi there.", seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stop_ends_the_stream_within_one_frame(small, small_voice):
    stop = threading.Event()
    got = []
    for chunk in small.generate_audio_stream(small_voice, LONG, stop=stop):
        got.append(chunk)
        if len(got) == 3:
            stop.set()
    assert len(got) <= 4
    # the model is usable again at once
    assert small.generate_audio(small_voice, "Again.").size > 0


def test_long_text_is_chunked_without_losing_tokens(small, small_voice):
    tok, rules = small._rt.tokenizer, small.config.text
    chunks = split_into_best_sentences(tok, LONG, rules, 50)
    assert len(chunks) > 2
    joined = [t for c in chunks for t in tok.encode(c)]
    assert joined == tok.encode(prepare_text_prompt(LONG, rules).text.strip())
    audio = small.generate_audio(small_voice, LONG, max_tokens=50)
    assert audio.size % 1920 == 0 and audio.size > len(chunks) * 7 * 1920


def test_voice_state_save_load_round_trips_exactly(small, small_voice, tmp_path):
    path = tmp_path / "me.safetensors"
    save_voice_state(small_voice, path)
    loaded = load_voice_state(path)
    np.testing.assert_array_equal(loaded.snapshot.k, small_voice.snapshot.k)
    np.testing.assert_array_equal(loaded.snapshot.v, small_voice.snapshot.v)
    again = small.get_state_for_audio_prompt(str(path))
    np.testing.assert_array_equal(
        small.generate_audio(again, "Same voice."), small.generate_audio(small_voice, "Same voice.")
    )


def test_official_voice_state_imports_as_the_reference_computed_it(small):
    dump = reference_run(SMALL, temp=0.0, frames=10)
    imported = small.get_state_for_audio_prompt(str(dump.path / "voice_state.safetensors"))
    ours = small._rt.voice_state(dump["voice_mimi_latents"][0].T)
    assert imported.n_rows == ours.n_rows
    assert rel_err(imported.snapshot.k, ours.k) <= REL_TOL and rel_err(imported.snapshot.v, ours.v) <= REL_TOL


@pytest.mark.parametrize("rate,channels", [(48000, 2), (8000, 1), (22050, 6)])
def test_any_rate_and_channel_count_clones(small, tmp_path, voice_wav, rate, channels):
    wav, src_rate = sf.read(voice_wav, dtype="float32")
    from pocket_ggml.voices.audio import resample

    mono = resample(wav if wav.ndim == 1 else wav.mean(axis=1), src_rate, rate)[: 3 * rate]
    path = tmp_path / f"v{rate}.flac"
    sf.write(path, np.stack([mono * (0.5 + 0.1 * c) for c in range(channels)], axis=1), rate)
    state = small.get_state_for_audio_prompt(path)
    assert state.n_rows > 10 and small.generate_audio(state, "Hello.").size > 0


def test_bad_requests_are_typed_errors(small, small_voice, tmp_path):
    with pytest.raises(AudioError):
        small.get_state_for_audio_prompt(np.zeros(100, np.float32))  # no rate
    with pytest.raises(AudioError):
        small.get_state_for_audio_prompt(str(tmp_path / "missing.wav"))
    with pytest.raises(ParameterError):
        TTSModel.load_model(synthetic_model(SMALL)[1], temp=-1.0)
    with pytest.raises(ParameterError):
        TTSModel.load_model(synthetic_model(SMALL)[1], threads=0)
    with pytest.raises(ModelNotAvailable, match="local .gguf"):
        TTSModel.load_model("english_7m_2026-10")  # a released name: no network here
    with pytest.raises(ModelNotAvailable):
        TTSModel.load_model("not-a-model")


def test_one_instance_refuses_a_second_concurrent_generation(small, small_voice):
    first = small.generate_audio_stream(small_voice, LONG)
    next(first)
    with pytest.raises(BusyError):
        small.generate_audio(small_voice, "Me too.")
    first.close()
    assert small.generate_audio(small_voice, "Now me.").size > 0


def test_two_instances_in_two_threads_match_sequential_runs(small_voice):
    path = synthetic_model(SMALL)[1]
    models = [TTSModel.load_model(path, temp=0.3, eos_threshold=float("inf")) for _ in range(2)]
    texts = ["First speaker says hello.", "Second speaker says goodbye."]
    sequential = [m.generate_audio(small_voice, t, seed=i) for i, (m, t) in enumerate(zip(models, texts))]
    results: list = [None, None]

    def run(i: int) -> None:
        results[i] = models[i].generate_audio(small_voice, texts[i], seed=i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(results, sequential):
        np.testing.assert_array_equal(a, b)


def test_released_checkpoint_is_converted_once_and_cached(tmp_path, monkeypatch, tokenizer_path):
    monkeypatch.setenv("POCKET_GGML_CACHE", str(tmp_path))
    st, _ = synthetic_model(SMALL, safetensors=True)
    model = TTSModel.load_model(st, tokenizer=tokenizer_path, quantization="Q8_0")
    cached = list((tmp_path / "converted").glob("*.gguf"))
    assert len(cached) == 1 and model.model_path == cached[0]
    assert TTSModel.load_model(st, quantization="Q8_0").model_path == cached[0]  # no tokenizer needed now


@pytest.mark.parametrize(
    ("requested", "plan"),  # (threads, mimi_threads, usable CPUs) -> (FlowLM, Mimi, prompts)
    [
        ((1, 1, 2), (1, 1, 2)),  # the default on two cores: prompts take both
        ((2, 2, 2), (1, 1, 2)),  # oversubscribed: each side capped at half
        ((1, 1, 1), (1, 1, 1)),  # one core: both sides share it, prompts one thread
        ((4, 4, 8), (4, 4, 8)),
        ((4, 2, 4), (2, 2, 4)),
        ((3, 1, 8), (3, 1, 4)),
    ],
)
def test_thread_plan_never_oversubscribes_the_cpus(requested, plan):
    flow_lm, mimi, prompts = thread_plan(*requested)
    assert (flow_lm, mimi, prompts) == plan
    cpus = requested[2]
    assert flow_lm + mimi <= max(2, cpus) and prompts <= cpus
