"""A corpus of bad requests against a real pocket-serve (with a bearer key): each answered with its documented
4xx status and OpenAI's error envelope, nothing answered with a 5xx, and the server still serving afterwards.

Statuses: 400 a value the server understands but refuses (empty or too long input, unknown voice or format,
speed other than 1.0, undecodable audio, malformed JSON or multipart); 401 missing or wrong key; 404 unknown
route, model or voice id; 405 wrong method; 413 a body or upload over its cap; 422 a body that does not fit
the schema (missing field, wrong type, out-of-range seed).
"""

from __future__ import annotations

import io
import json
import struct

import httpx
import numpy as np
import pytest
import soundfile as sf
from _reference import shared_path
from _server import running_server

KEY = "corpus-key-7f3a"
AUTH = {"Authorization": f"Bearer {KEY}"}
SPEECH = "/v1/audio/speech"
VOICES = "/v1/audio/voices"


@pytest.fixture(scope="module")
def server():
    with running_server("--workers", "1", "--api-key", KEY, "--queue", "4") as s:
        yield s


def _wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _json(body, **kw):
    return {
        "content": body if isinstance(body, (str, bytes)) else json.dumps(body),
        "headers": {"Content-Type": "application/json", **AUTH},
        **kw,
    }


def _speech(**fields):
    return ("POST", SPEECH, _json({"input": "Hello.", **fields}))


def _upload(path: str, files=None, data=None):
    return ("POST", path, {"files": files, "data": data, "headers": AUTH})


def _raw(path: str, body: bytes, content_type: str):
    return ("POST", path, {"content": body, "headers": {"Content-Type": content_type, **AUTH}})


def _corpus() -> list[tuple[str, tuple, int]]:
    real = shared_path("assets", "voices", "speaker-48k.wav").read_bytes()
    silence_121s = _wav(np.zeros(121 * 8000, np.float32), 8000)
    nan_clip = _wav(np.full(4000, np.nan, np.float32), 16000, "FLOAT")
    low_rate = _wav(np.zeros(100, np.float32), 100)
    header_only = _wav(np.zeros(0, np.float32), 16000)
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    png = b"\x89PNG\r\n\x1a\n" + garbage[:2000]
    riff_lie = b"RIFF" + struct.pack("<I", 2**31) + b"WAVEfmt " + struct.pack("<I", 16) + b"\x07\x00" + garbage[:500]
    big_upload = b"\0" * (21 * 2**20)
    cases: list[tuple[str, tuple, int]] = []

    def case(name, request, status):
        cases.append((name, request, status))

    # -- malformed JSON
    for i, body in enumerate(
        [
            "{",
            '{"input":',
            '{"input": "hi",}',
            "{'input': 'hi'}",
            '{"input": "hi"} trailing',
            "\xff\xfe{",
            b"\xff\xfe\x00{\x00",
            "[" * 100_000 + "]" * 100_000,
            "input=hi",
        ]
    ):
        case(f"json-malformed-{i}", ("POST", SPEECH, _json(body)), 400)
    # -- JSON of the wrong shape or types
    for i, body in enumerate([[], None, "string", 123, True, {}, {"voice": "synthetic"}]):
        case(f"json-shape-{i}", ("POST", SPEECH, _json(json.dumps(body))), 422)
    case("empty-body", ("POST", SPEECH, _json("")), 422)
    for field, value in [
        ("input", 5),
        ("input", ["hi"]),
        ("input", {"text": "hi"}),
        ("input", None),
        ("input", True),
        ("voice", 5),
        ("voice", ["synthetic"]),
        ("voice", {"name": "x"}),
        ("voice", {"id": 5}),
        ("response_format", 5),
        ("response_format", None),
        ("speed", "1.0"),
        ("speed", [1]),
        ("speed", True),
        ("stream_format", 1),
        ("model", 4),
        ("model", {"id": "x"}),
        ("seed", -1),
        ("seed", 2**64),
        ("seed", "5"),
        ("seed", 1.5),
        ("seed", True),
        ("instructions", 3),
    ]:
        case(f"type-{field}-{value!r}"[:60], _speech(**{field: value}), 422)
    # -- values refused
    for i, text in enumerate(["", " ", "\n\t ", "x" * 4097, "é" * 5000, "a" * 100_000, "\ud800", "ok \udfff ok"]):
        case(f"input-{i}", ("POST", SPEECH, _json(json.dumps({"input": text}))), 400)
    for voice in [
        "nope",
        "",
        "alloy",
        "../../etc/passwd",
        "voice-../../x",
        "voice-0000000000000000",
        "x" * 10_000,
        "/etc/passwd",
        "synthetic\x00",
        "SYNTHETIC",
        "voice-0123456789ABCDEF",
    ]:
        case(f"voice-{voice[:30]!r}", _speech(voice=voice), 400)
    case("voice-object-unknown", _speech(voice={"id": "nope"}), 400)
    for fmt in ["aac", "WAV", "", "ogg", "../wav", "mp4", "pcm16", "wav;"]:
        case(f"format-{fmt!r}", _speech(response_format=fmt), 400)
    for speed in [0.25, 4.0, 0, -1, 1e308, 0.999, 2]:
        case(f"speed-{speed}", _speech(speed=speed), 400)
    case("speed-nan", ("POST", SPEECH, _json('{"input": "hi", "speed": NaN}')), 400)
    case("speed-inf", ("POST", SPEECH, _json('{"input": "hi", "speed": Infinity}')), 400)
    for fmt in ["sse2", "", "SSE", "events"]:
        case(f"stream-format-{fmt!r}", _speech(stream_format=fmt), 400)
    case("instructions", _speech(instructions="whisper it"), 400)
    # -- body size
    case("json-over-1MB", ("POST", SPEECH, _json(json.dumps({"input": "a" * (2 << 20)}))), 413)

    def chunked():
        for _ in range(40):
            yield b" " * 65536

    case(
        "chunked-over-1MB",
        ("POST", SPEECH, {"content": chunked(), "headers": {"Content-Type": "application/json", **AUTH}}),
        413,
    )
    # -- routes and methods
    for path in [
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v2/audio/speech",
        "/v1/audio/speech/x",
        "/static/index.htm",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/models/nope",
        "/v1/models/..",
        "/tts/x",
        "/x%0A2026-01-01 INFO pocket_ggml.serve: forged 200 ok",
    ]:
        case(f"route-{path}", ("GET", path, {"headers": AUTH}), 404)
    for method, path in [
        ("GET", SPEECH),
        ("PUT", SPEECH),
        ("PUT", VOICES),
        ("PATCH", VOICES),
        ("GET", "/tts"),
        ("POST", "/health"),
        ("POST", "/v1/models"),
        ("DELETE", VOICES),
    ]:
        case(f"method-{method}-{path}", (method, path, {"headers": AUTH}), 405)
    # -- voice registration uploads
    case("register-no-file", _upload(VOICES, data={"name": "x"}), 422)
    case("register-json", ("POST", VOICES, _json({"file": "x"})), 422)
    for name, data in [
        ("empty", b""),
        ("text", b"hello, not audio"),
        ("garbage", garbage),
        ("png", png),
        ("truncated-wav", real[:100]),
        ("riff-lie", riff_lie),
        ("header-only", header_only),
        ("nan-samples", nan_clip),
        ("100Hz", low_rate),
        ("121s", silence_121s),
        ("json", b'{"audio": "x"}'),
        ("zip", b"PK\x03\x04" + garbage[:1000]),
    ]:
        case(f"register-{name}", _upload(VOICES, files={"file": ("clip.wav", data, "audio/wav")}), 400)
    case("register-21MB", _upload(VOICES, files={"file": ("big.wav", big_upload, "audio/wav")}), 413)
    case(
        "register-name-too-long",
        _upload(VOICES, files={"file": ("clip.wav", real, "audio/wav")}, data={"name": "n" * 101}),
        400,
    )
    case(
        "register-path-filename", _upload(VOICES, files={"file": ("../../etc/passwd", b"not audio", "audio/wav")}), 400
    )
    case("multipart-no-boundary", _raw(VOICES, b"--x\r\n", "multipart/form-data"), 400)
    case(
        "multipart-bad-boundary",
        _raw(
            VOICES, b'--a\r\nContent-Disposition: form-data; name="file"\r\n\r\nxx', "multipart/form-data; boundary=b"
        ),
        400,
    )
    case(
        "multipart-truncated",
        _raw(
            VOICES,
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF',
            "multipart/form-data; boundary=b",
        ),
        422,  # the parser keeps no unfinished part: the file field is missing
    )
    case("multipart-garbage", _raw(VOICES, garbage, "multipart/form-data; boundary=zz"), 400)
    # -- the official server's /tts
    case("tts-no-text", _upload("/tts", data={"voice_url": "synthetic"}), 422)
    case("tts-empty-text", _upload("/tts", data={"text": "  "}), 400)
    case("tts-too-long", _upload("/tts", data={"text": "y" * 4097}), 400)
    case(
        "tts-both-voices",
        _upload(
            "/tts", data={"text": "hi", "voice_url": "synthetic"}, files={"voice_wav": ("a.wav", real, "audio/wav")}
        ),
        400,
    )
    for url in [
        "nope",
        "http://example.com/a.wav",
        "https://x/y.wav",
        "hf://kyutai/tts-voices/alba.wav",
        "../../../etc/passwd",
        "file:///etc/passwd",
    ]:
        case(f"tts-voice-url-{url[:20]}", _upload("/tts", data={"text": "hi", "voice_url": url}), 400)
    for name, data in [("empty", b""), ("text", b"not audio at all"), ("garbage", garbage), ("truncated", real[:64])]:
        case(
            f"tts-voice-wav-{name}",
            _upload("/tts", data={"text": "hi"}, files={"voice_wav": ("v.wav", data, "audio/wav")}),
            400,
        )
    case("tts-json", ("POST", "/tts", _json({"text": "hi"})), 422)
    # -- deleting voices
    for voice_id, status in [
        ("synthetic", 400),
        ("voice-0000000000000000", 404),
        ("voice-ZZZZ", 404),
        ("%2e%2e%2fx", 404),
        ("v" * 5000, 404),
        ("voice-0000000000000000.json", 404),
        ("%00", 404),
        (".voice-0000000000000000.json.part", 404),
    ]:
        case(f"delete-{voice_id[:30]}", ("DELETE", f"{VOICES}/{voice_id}", {"headers": AUTH}), status)
    # -- the bearer key
    for path, method in [
        (SPEECH, "POST"),
        (VOICES, "GET"),
        ("/v1/models", "GET"),
        ("/metrics", "GET"),
        (f"{VOICES}/synthetic", "DELETE"),
        ("/tts", "POST"),
        ("/nope", "GET"),
    ]:
        case(f"no-key-{method}-{path}", (method, path, {}), 401)
    for header in [
        f"Bearer {KEY}x",
        "Bearer",
        "Bearer  x",
        f"Basic {KEY}",
        f"bearer{KEY}",
        KEY,
        "Bearer wrong",
        f"Bearer {KEY[:-1]}",
    ]:
        case(f"bad-key-{header[:20]!r}", ("GET", "/v1/models", {"headers": {"Authorization": header}}), 401)
    return cases


def test_the_corpus_has_over_100_cases():
    assert len(_corpus()) >= 100


def test_bad_requests_get_their_status_and_the_envelope_and_the_server_lives(server):
    failures = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name, (method, path, kwargs), status in _corpus():
            try:
                r = http.request(method, path, **kwargs)
            except httpx.HTTPError as e:
                failures.append(f"{name}: {e!r}")
                continue
            try:
                error = r.json()["error"]
                envelope = set(error) == {"message", "type", "param", "code"} and error["message"]
            except (ValueError, KeyError, TypeError):
                envelope = False
            if r.status_code != status or not envelope:
                failures.append(f"{name}: {r.status_code} (want {status}) {r.text[:200]}")
            if r.status_code == 401:
                assert r.headers["www-authenticate"] == "Bearer"
            assert server.alive(), f"the server died on {name}"
        assert not failures, "\n".join(failures)
        # still serving, and nothing a client sent made a server fault
        assert http.get("/health").json()["status"] == "healthy"
        r = http.post(SPEECH, json={"input": "Still here.", "response_format": "wav"}, headers=AUTH)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log and " 500 " not in log
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())  # no line forged through a path


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f600" * 20,
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "e\u0301" * 100,
        "a\u200db\u200c" * 50,
        "\x00\x01\x02 hi",
        "\u202eevil\u202c",
        "\ufeff",
        "...!!!???",
        "\u3000\u00a0 words \u2028 more",
    ],
)
def test_odd_unicode_input_is_spoken_or_refused_never_a_fault(server, text):
    r = httpx.post(f"{server.url}{SPEECH}", json={"input": text, "response_format": "pcm"}, headers=AUTH, timeout=120)
    assert r.status_code in (200, 400), r.text[:300]
    if r.status_code == 400:
        assert r.json()["error"]["param"] == "input"
    assert server.alive()


def test_health_needs_no_key(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
