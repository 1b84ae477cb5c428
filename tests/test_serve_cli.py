"""pocket-serve's command line: usage errors exit 2 with one line; HTTP and Wyoming served side by side from one
process; CORS answered only for the origins given with --cors; two instances at once; a clean stop mid-stream."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading

import httpx
import pytest
from _cli import run_cli
from _server import free_port, running_server


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-http"], "--no-http needs --wyoming"),
        (["--wyoming", "http://127.0.0.1:10200"], "is not tcp://HOST:PORT"),
        (["--model", "/nonexistent/model.gguf", "--port", "9"], "no such file"),
        (["--workers", "0"], "--workers"),
        (["--port", "70000"], "--port"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args, message):
    result = run_cli("serve", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


ORIGIN = "http://page.example:3000"


@pytest.fixture(scope="module")
def server():
    wyoming_port = free_port()
    with running_server("--workers", "2", "--cors", ORIGIN, "--wyoming", f"tcp://127.0.0.1:{wyoming_port}") as s:
        s.wyoming_port = wyoming_port
        yield s


def test_wyoming_is_served_beside_http(server):
    with socket.create_connection(("127.0.0.1", server.wyoming_port), timeout=30) as conn:
        conn.sendall(b'{"type": "describe"}\n')
        reader = conn.makefile("rb")
        header = json.loads(reader.readline())
        assert header["type"] == "info"
        data = json.loads(reader.read(header["data_length"])) if header.get("data_length") else header["data"]
    assert [voice["name"] for voice in data["tts"][0]["voices"]][:1] == ["synthetic"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "healthy"


def test_cors_only_for_the_given_origin(server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = httpx.options(f"{server.url}/v1/audio/speech", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(f"{server.url}/v1/audio/speech", headers={"Origin": "http://evil.example", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = httpx.get(f"{server.url}/v1/models", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN


def test_two_instances_speak_at_once_and_alike(server):
    """K=2 instances of the one mapped model: two requests at once, each the same samples as alone."""
    body = {"input": "Two at once. Each on its own instance.", "response_format": "pcm", "seed": 3}
    alone = httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120).content
    results: list[bytes] = []

    def speak():
        results.append(httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120).content)

    threads = [threading.Thread(target=speak) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [alone, alone]
    assert httpx.get(f"{server.url}/health").json()["workers"] == 2


def test_no_cors_unless_asked():
    with running_server("--workers", "1") as s:
        r = httpx.get(f"{s.url}/v1/models", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_stopping_mid_stream_exits_cleanly():
    text = " ".join(f"Sentence {i} of a stream still running when the server is told to stop." for i in range(50))
    with running_server("--workers", "1") as s, httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{s.url}/v1/audio/speech", json={"input": text, "response_format": "pcm"}) as r:
            pieces = r.iter_raw()
            next(pieces)
            s.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(httpx.HTTPError):  # the stream is cut by the shutdown
                for _ in pieces:
                    pass
        assert s.proc.wait(timeout=60) == 0
        log = s.log()
    assert "Traceback" not in log and "Fatal Python error" not in log, log
