"""A real pocket-serve with one instance under more than it can take: a client that leaves mid-stream frees the
instance, requests beyond the queue get 429 with Retry-After, a wait past --queue-timeout gets 503, a stream
past --request-timeout is cut off (the client sees an incomplete response), and the server keeps serving."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from _server import running_server

LONG_TEXT = " ".join(f"This is sentence number {i}, spoken only to keep the instance busy." for i in range(60))
# minutes of audio: longer than the time limit below on any machine
VERY_LONG_TEXT = " ".join(f"This is sentence number {i}, spoken only to run into the limit." for i in range(600))


@pytest.fixture(scope="module")
def server():
    with running_server("--workers", "1", "--queue", "1", "--queue-timeout", "600") as s:
        yield s


def _health(server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=10).json()


def _wait_for(server, predicate, what: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while not predicate(health := _health(server)):
        assert time.monotonic() < deadline, f"{what}: {health}"
        time.sleep(0.05)
    return health


def _log_line(server, needle: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while not (lines := [line for line in server.log().splitlines() if needle in line]):
        assert time.monotonic() < deadline, f"no log line with {needle!r}"
        time.sleep(0.05)
    return lines[-1]


@contextlib.contextmanager
def _streaming(server, text: str) -> Iterator[httpx.Response]:
    """A streamed speech request, its response open (and its audio unread) for the block."""
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", f"{server.url}/v1/audio/speech", json={"input": text, "response_format": "pcm"}) as r,
    ):
        yield r


def _speak(server, text: str = "Short.", **fields) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/audio/speech", json={"input": text, "response_format": "pcm", **fields}, timeout=120
    )


def test_a_client_leaving_mid_stream_frees_the_instance(server):
    with _streaming(server, LONG_TEXT) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        pieces = r.iter_raw()  # kept: a dropped iterator closes the response
        next(pieces)  # the first audio, then hang up
        assert _health(server)["busy"] == 1
    _wait_for(server, lambda h: h["busy"] == 0, "the instance was not freed")
    assert " disconnected " in _log_line(server, request_id)
    assert _speak(server).status_code == 200


def test_beyond_the_queue_429_with_retry_after_then_service_resumes(server):
    with _streaming(server, LONG_TEXT) as held:
        assert held.status_code == 200
        queued: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: queued.append(_speak(server)))
        waiter.start()
        _wait_for(server, lambda h: h["waiting"] == 1, "the second request did not queue")
        refused = _speak(server)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "server_busy" and error["message"]
    waiter.join(timeout=120)  # the held stream was closed: the queued request gets the instance
    assert not waiter.is_alive() and queued[0].status_code == 200 and queued[0].content
    _wait_for(server, lambda h: h["busy"] == 0 and h["waiting"] == 0, "instances not freed")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'pocket_requests_total{outcome="overloaded",route="/v1/audio/speech"}' in metrics


def test_a_client_leaving_the_queue_takes_no_instance(server):
    with _streaming(server, LONG_TEXT) as held:
        assert held.status_code == 200
        with pytest.raises(httpx.ReadTimeout):  # gives up while queued
            httpx.post(f"{server.url}/v1/audio/speech", json={"input": "Never mind."}, timeout=1.5)
        _wait_for(server, lambda h: h["waiting"] == 0, "the abandoned request still waits")
        assert _health(server)["busy"] == 1
    assert " disconnected " in _log_line(server, "chars=11 ")
    _wait_for(server, lambda h: h["busy"] == 0, "instance not freed")


@pytest.fixture(scope="module")
def impatient_server():
    with running_server(
        "--workers",
        "1",
        "--queue",
        "2",
        "--queue-timeout",
        "0.5",
        "--request-timeout",
        "8",
        "--max-input-chars",
        "50000",
    ) as s:
        yield s


def test_a_wait_past_the_queue_timeout_gets_503(impatient_server):
    server = impatient_server
    with _streaming(server, LONG_TEXT) as held:
        assert held.status_code == 200
        r = _speak(server)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_timeout"
        assert int(r.headers["retry-after"]) >= 1


def test_a_stream_past_the_request_timeout_is_cut_off(impatient_server):
    server = impatient_server
    _wait_for(server, lambda h: h["busy"] == 0, "instance still busy")
    with _streaming(server, VERY_LONG_TEXT) as r:
        request_id = r.headers["x-request-id"]
        with pytest.raises(httpx.RemoteProtocolError):  # no final chunk: the client knows it is cut short
            for _ in r.iter_raw():
                pass
    assert " timeout " in _log_line(server, request_id)
    _wait_for(server, lambda h: h["busy"] == 0, "instance not freed after the time limit")
    assert _speak(server).status_code == 200


def test_a_client_that_stops_reading_loses_the_stream_at_the_time_limit(impatient_server):
    server = impatient_server
    _wait_for(server, lambda h: h["busy"] == 0, "instance still busy")
    with _streaming(server, VERY_LONG_TEXT) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        # reads nothing: the server's sends stall once the socket buffers are full, until the limit
        _wait_for(server, lambda h: h["busy"] == 0, "a stalled client kept its instance past the limit")
    assert " timeout " in _log_line(server, request_id)
