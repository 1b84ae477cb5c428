"""pocket-serve through the official `openai` client and the official pocket-tts server's /tts form.

One real server (a subprocess on 127.0.0.1, the embedded model, one instance) for the module. Its audio is
checked against `TTSModel.generate_audio` on the same seed in this process: the very same int16 samples for
wav, pcm and flac (and the sse stream's pcm deltas); for the lossy mp3 and opus, the same length (mp3: plus
the encoder's delay and padding, under three 1152-sample frames) and an RMS level within 6 dB.
"""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from _reference import shared_path
from _server import running_server

TEXT = "Hello world. This is pocket-serve, speaking through the OpenAI client."
SEED = 11


@pytest.fixture(scope="module")
def server():
    with running_server("--workers", "1", "--threads", "1") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model():
    from pocket_ggml import TTSModel

    m = TTSModel.load_model(threads=1, mimi_threads=1)
    yield m
    m.close()


@pytest.fixture(scope="module")
def expected(model):
    """The int16 samples the server must send for TEXT in the model's stored voice with SEED."""
    from pocket_ggml.serve.formats import pcm16

    voice = model.get_state_for_audio_prompt(model.voice_names[0])
    audio = model.generate_audio(voice, TEXT, seed=SEED)
    assert audio.size > 0
    return pcm16(audio)


def _speech(client, fmt: str, **extra):
    return client.audio.speech.create(
        model="tts-1", voice="synthetic", input=TEXT, response_format=fmt, extra_body={"seed": SEED, **extra}
    )


def _decode(fmt: str, data: bytes) -> np.ndarray:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2")
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 24000
    return samples


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac"])
def test_lossless_formats_match_generate_audio(client, expected, fmt):
    response = _speech(client, fmt)
    assert response.response.headers["content-type"].startswith(
        {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}[fmt]
    )
    np.testing.assert_array_equal(_decode(fmt, response.content), expected)


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac", "mp3", "opus"])
def test_streaming_response_gives_the_same_audio(client, fmt):
    whole = _speech(client, fmt).content
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="synthetic", input=TEXT, response_format=fmt, extra_body={"seed": SEED}
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        pieces = list(response.iter_bytes())
    # the same samples (an Ogg stream's serial number is random, so opus bytes differ)
    np.testing.assert_array_equal(_decode(fmt, b"".join(pieces)), _decode(fmt, whole))
    if fmt in ("wav", "pcm"):  # streamed as decoded, frame by frame
        assert len(pieces) > 1


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_lossy_formats_decode_to_the_same_audio_within_codec_tolerance(client, expected, fmt):
    decoded = _decode(fmt, _speech(client, fmt).content).astype(np.float64)
    n = expected.size
    if fmt == "opus":  # Ogg Opus trims its pre-skip and end padding exactly
        assert decoded.size == n
    else:  # mp3 keeps the encoder delay (~1105 samples) and pads to whole 1152-sample frames
        assert n <= decoded.size < n + 3 * 1152
    ref_rms = np.sqrt(np.mean(expected.astype(np.float64) ** 2))
    rms = np.sqrt(np.mean(decoded**2))
    assert abs(20 * np.log10(rms / ref_rms)) < 6.0


def test_sse_stream_carries_the_pcm_samples(client, expected):
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="synthetic",
        input=TEXT,
        response_format="pcm",
        stream_format="sse",
        extra_body={"seed": SEED},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = b"".join(response.iter_bytes()).decode()
    events = [json.loads(block[len("data: ") :]) for block in text.split("\n\n") if block.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_characters"] == len(TEXT)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    np.testing.assert_array_equal(np.frombuffer(audio, "<i2"), expected)


def test_errors_reach_the_client_as_typed_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "voice" and e.value.body["code"] == "voice_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="synthetic", input=TEXT, response_format="aac")
    assert "aac" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="synthetic", input=TEXT, speed=1.25)
    assert e.value.body["param"] == "speed"


def test_models_list(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [httpx.get(f"{server.url}/health").json()["model"]]


def test_registered_voice_by_id_and_voice_object(client, server, model):
    clip = shared_path("assets", "voices", "speaker-48k.wav")
    with httpx.Client(base_url=server.url, timeout=120) as http:
        r = http.post(
            "/v1/audio/voices", files={"file": ("me.wav", clip.read_bytes(), "audio/wav")}, data={"name": "Speaker"}
        )
        assert r.status_code == 201, r.text
        voice = r.json()
        assert voice["name"] == "Speaker" and voice["source"] == "registered"
        listed = http.get("/v1/audio/voices").json()["data"]
        assert voice["id"] in [v["id"] for v in listed]
    # the server's clone equals this process's clone of the same file, so the audio does too
    from pocket_ggml.serve.formats import pcm16

    expected = pcm16(model.generate_audio(model.get_state_for_audio_prompt(clip), TEXT, seed=SEED))
    by_name = _decode(
        "pcm",
        client.audio.speech.create(
            model="tts-1", voice=voice["id"], input=TEXT, response_format="pcm", extra_body={"seed": SEED}
        ).content,
    )
    by_object = _decode(
        "pcm",
        client.audio.speech.create(
            model="tts-1", voice={"id": voice["id"]}, input=TEXT, response_format="pcm", extra_body={"seed": SEED}
        ).content,
    )
    np.testing.assert_array_equal(by_name, expected)
    np.testing.assert_array_equal(by_object, expected)


# ---------------------------------------------------------------------- the official server's /tts
def test_tts_form_with_a_stored_voice(server):
    r = httpx.post(f"{server.url}/tts", data={"text": TEXT, "voice_url": "synthetic"}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert "generated_speech.wav" in r.headers["content-disposition"]
    samples = _decode("wav", r.content)
    # /tts takes no seed: check the samples are audio of the model, not their values
    assert samples.size > 0 and samples.size % 1920 == 0
    assert np.abs(samples).max() > 0


def test_tts_form_with_an_uploaded_clip(server):
    clip = shared_path("assets", "voices", "speaker-48k.wav").read_bytes()
    r = httpx.post(
        f"{server.url}/tts", data={"text": TEXT}, files={"voice_wav": ("v.wav", clip, "audio/wav")}, timeout=120
    )
    assert r.status_code == 200
    assert _decode("wav", r.content).size > 0


def test_tts_refusals_carry_detail_for_its_clients(server):
    r = httpx.post(f"{server.url}/tts", data={"text": "   "}, timeout=30)
    assert r.status_code == 400 and r.json()["detail"] == r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/tts", data={"text": TEXT, "voice_url": "hf://kyutai/voices/x.wav"}, timeout=30)
    assert r.status_code == 400 and "URL" in r.json()["detail"]


def test_one_log_line_per_request_and_metrics(server):
    r = httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Log me.", "response_format": "pcm"}, timeout=60)
    request_id = r.headers["x-request-id"]
    deadline = time.monotonic() + 10  # the line is written once the response is complete, on the server's side
    while not (lines := [line for line in server.log().splitlines() if request_id in line]):
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.05)
    assert len(lines) == 1
    assert "POST /v1/audio/speech 200 ok chars=7 voice=synthetic format=pcm first_byte_ms=" in lines[0]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'pocket_requests_total{outcome="ok",route="/v1/audio/speech"}' in metrics
    for name in (
        "pocket_first_byte_seconds_bucket",
        "pocket_request_seconds_bucket",
        "pocket_audio_seconds_total",
        "pocket_queue_depth",
        "pocket_busy_instances",
    ):
        assert name in metrics
