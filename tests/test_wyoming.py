"""The Wyoming TTS service, spoken to by the wyoming package's own client over a real loopback TCP socket.

The service runs in this process (asyncio, a free 127.0.0.1 port) on a one-instance pool of the embedded
model, with one voice registered from ../shared. Audio is checked sample for sample against
`TTSModel.generate_audio` with the same seed. Every wait is bounded (BOUND seconds), so a broken service fails
a test instead of hanging it; no test asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import sys

import numpy as np
import pytest
from _server import free_port, running_server
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient, AsyncUnixClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from pocket_ggml import TTSModel
from pocket_ggml.errors import UnknownVoice, WyomingServiceError
from pocket_ggml.serve.formats import pcm16
from pocket_ggml.serve.pool import ModelPool
from pocket_ggml.serve.registry import VoiceRegistry
from pocket_ggml.serve.wyoming import (
    SERVICE_TYPE,
    model_languages,
    serve_wyoming,
    zeroconf_service_info,
)

SEED = 1234
BOUND = 120.0  # seconds any single wait may take before the test fails
TEXT = "Hello from the living room. The kettle is on, and the lights are dimmed to 3.5 percent!"
LOGGER = "pocket_ggml.serve.wyoming"


@pytest.fixture(scope="module")
def pool():
    pool = ModelPool(workers=1)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def registry(pool, tmp_path_factory, voice_wav):
    registry = VoiceRegistry(pool, tmp_path_factory.mktemp("voices"))
    asyncio.run(registry.register(voice_wav.read_bytes(), "Speaker"))
    return registry


@pytest.fixture(scope="module")
def registered_id(registry) -> str:
    return next(v.id for v in registry.list() if v.source == "registered")


@pytest.fixture(scope="module")
def reference():
    model = TTSModel.load_model()
    yield model
    model.close()


def expected_pcm(reference, registry, voice: str, text: str, seed: int) -> bytes:
    state = asyncio.run(registry.state(voice))
    return pcm16(reference.generate_audio(state, text, seed=seed)).tobytes()


def cut_sentences(reference, chunks: list[str]) -> list[list[str]]:
    """A streamed request's text as the service hands it to the speaker: the texts of each sentence."""
    cutter = reference.sentence_pieces()
    sentences: list[list[str]] = []
    current: list[str] = []
    for text, ends in [*(cut for chunk in chunks for cut in cutter.feed(chunk)), (cutter.close(), True)]:
        if current or text.strip():
            current.append(text)
        if ends and current:
            sentences.append(current)
            current = []
    return sentences


def expected_stream_pcm(reference, registry, voice: str, sentences: list[list[str]], seed: int) -> bytes:
    """A streamed request's audio: the k-th sentence spoken by `generate_audio_for_text_stream` on the texts
    it was handed, with seed + k. (The same as `expected_pcm` of each sentence at F32; with the embedded
    Q4_K_M model, a sentence prompted in pieces is rounded otherwise by ggml's quantized kernels.)"""
    state = asyncio.run(registry.state(voice))
    audio = [reference.generate_audio_for_text_stream(state, texts, seed=seed + k) for k, texts in enumerate(sentences)]
    return b"".join(pcm16(chunk).tobytes() for sentence in audio for chunk in sentence)


@contextlib.asynccontextmanager
async def running(pool, registry, **kwargs):
    """serve_wyoming on a free loopback port, up once it accepts a connection; stopped (and its connections
    with it) when the block ends."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_wyoming(f"tcp://127.0.0.1:{port}", pool, registry, stop=stop, **kwargs))
    for _ in range(int(BOUND / 0.05)):
        if task.done():
            task.result()  # raises what stopped it
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the Wyoming service did not start listening")
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, BOUND)


def client(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, connect_timeout=BOUND, read_timeout=BOUND)


async def read_until(c: AsyncTcpClient, last: str) -> list[Event]:
    events = []
    while True:
        event = await c.read_event()
        assert event is not None, f"the connection closed before {last}: {[e.type for e in events]}"
        events.append(event)
        if event.type == last:
            return events


def audio_of(events: list[Event]) -> bytes:
    return b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))


async def synthesize(port: int, text: str, voice: str | None = None) -> list[Event]:
    async with client(port) as c:
        await c.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        return await read_until(c, "audio-stop")


async def describe(port: int) -> Info:
    async with client(port) as c:
        await c.write_event(Describe().event())
        return Info.from_event((await read_until(c, "info"))[-1])


async def until(condition, what: str) -> None:
    for _ in range(int(BOUND / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {BOUND:g} s: {what}")


# ---------------------------------------------------------------------- describe, synthesize
def test_describe_lists_stored_and_registered_voices(pool, registry, registered_id):
    async def scenario():
        async with running(pool, registry) as port:
            return await describe(port)

    info = asyncio.run(scenario())
    (program,) = info.tts
    assert program.name == "pocket-ggml" and program.installed and program.version
    assert program.attribution.name == "Kyutai"
    assert program.supports_synthesize_streaming is True
    voices = {v.name: v for v in program.voices}
    assert set(voices) == {*pool.voice_names, registered_id}
    assert voices[registered_id].description == "Speaker (registered)"
    assert all(v.languages == ["en"] and v.installed for v in voices.values())


@pytest.mark.parametrize("kind", ["stored", "registered"])
def test_synthesize_streams_the_audio_of_generate_audio(pool, registry, registered_id, reference, kind):
    voice = pool.voice_names[0] if kind == "stored" else registered_id

    async def scenario():
        async with running(pool, registry, seed=SEED) as port:
            return await synthesize(port, TEXT, voice)

    events = asyncio.run(scenario())
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert [e.type for e in events[1:-1]] == ["audio-chunk"] * (len(events) - 2)
    assert len(events) - 2 > 1, "the audio came in one piece, not frame by frame"
    assert events[-1].type == "audio-stop"
    assert audio_of(events) == expected_pcm(reference, registry, voice, TEXT, SEED)


def test_unknown_voice_speaks_the_default_voice_with_a_warning(pool, registry, reference, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario():
        async with running(pool, registry, seed=SEED) as port:
            return await synthesize(port, TEXT, "no-such-voice")

    events = asyncio.run(scenario())
    assert audio_of(events) == expected_pcm(reference, registry, pool.voice_names[0], TEXT, SEED)
    assert any("unknown voice 'no-such-voice'" in r.getMessage() for r in caplog.records)


def test_without_a_seed_each_request_draws_its_own(pool, registry):
    async def scenario():
        async with running(pool, registry) as port:
            return [audio_of(await synthesize(port, TEXT)) for _ in range(2)]

    first, second = asyncio.run(scenario())
    assert len(first) > 0 and first != second


# ---------------------------------------------------------------------- streaming synthesis
def test_streaming_speaks_each_sentence_while_text_still_arrives(pool, registry, reference):
    """Home Assistant's order: synthesize-start, text in small pieces, the whole text again as a synthesize
    (for services that do not stream), synthesize-stop."""
    first = ["Hel", "lo the", "re. "]
    rest = ["The price is 3", ".5 euros", " today! Is it", " rea", "dy?"]
    sentences = ["Hello there.", "The price is 3.5 euros today!", "Is it ready?"]
    log: list[str] = []

    async def scenario():
        async with running(pool, registry, seed=SEED) as port, client(port) as c:

            async def send(event: Event) -> None:
                await c.write_event(event)
                log.append(f"sent {event.type}")

            async def receive_until(last: str) -> list[Event]:
                events = []
                while True:
                    event = await c.read_event()
                    assert event is not None, "the connection closed"
                    log.append(f"received {event.type}")
                    events.append(event)
                    if event.type == last:
                        return events

            await send(SynthesizeStart(voice=SynthesizeVoice(name=pool.voice_names[0])).event())
            for piece in first:
                await send(SynthesizeChunk(text=piece).event())
            # Only the first sentence is complete: its audio must come without any more text.
            events = await receive_until("audio-chunk")
            receiving = asyncio.create_task(receive_until("synthesize-stopped"))
            for piece in rest:
                await send(SynthesizeChunk(text=piece).event())
            await send(Synthesize(text="".join(first + rest)).event())
            await send(SynthesizeStop().event())
            return events + await asyncio.wait_for(receiving, BOUND)

    events = asyncio.run(scenario())
    assert log.index("received audio-chunk") < log.index("sent synthesize-stop")
    assert log.index("received audio-chunk") < log.index("sent synthesize-chunk", len(first) + 1)
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert set(types[1:-2]) == {"audio-chunk"}, "one audio stream around all the sentences"
    voice = pool.voice_names[0]
    cut = cut_sentences(reference, first + rest)
    assert ["".join(texts).strip() for texts in cut] == sentences
    assert audio_of(events) == expected_stream_pcm(reference, registry, voice, cut, SEED)


def test_a_sentence_is_on_an_instance_while_it_is_written(pool, registry, reference):
    """A streamed sentence is prompted ahead: an instance is borrowed for it at its first words, before it
    ends, and its audio is still the sentence's own."""
    voice = pool.voice_names[0]

    async def scenario():
        async with running(pool, registry, seed=SEED) as port, client(port) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name=voice)).event())
            await c.write_event(SynthesizeChunk(text="The weather today is").event())
            await c.write_event(SynthesizeChunk(text=" fine and").event())
            for _ in range(int(BOUND / 0.01)):
                if pool.busy:
                    break
                await asyncio.sleep(0.01)
            held = pool.busy
            await c.write_event(SynthesizeChunk(text=" warm. ").event())
            await c.write_event(SynthesizeStop().event())
            return held, await asyncio.wait_for(read_until(c, "synthesize-stopped"), BOUND)

    held, events = asyncio.run(scenario())
    assert held == 1, "no instance took the sentence before it ended"
    cut = cut_sentences(reference, ["The weather today is", " fine and", " warm. "])
    assert cut == [["The weather today ", "is fine ", "and warm."]]
    assert audio_of(events) == expected_stream_pcm(reference, registry, voice, cut, SEED)


def test_a_sentence_left_unfinished_is_spoken_as_it_stands(pool, registry, reference, monkeypatch):
    """A client that stops writing mid-sentence does not hold an instance: after SENTENCE_WAIT the words so far
    are spoken, and what comes later is the next sentence."""
    monkeypatch.setattr("pocket_ggml.serve.wyoming.SENTENCE_WAIT", 0.5)
    voice = pool.voice_names[0]

    async def scenario():
        async with running(pool, registry, seed=SEED) as port, client(port) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name=voice)).event())
            await c.write_event(SynthesizeChunk(text="Hello there my ").event())
            first = await asyncio.wait_for(read_until(c, "audio-chunk"), BOUND)  # with no more text sent
            await c.write_event(SynthesizeChunk(text="friend. ").event())
            await c.write_event(SynthesizeStop().event())
            return first + await asyncio.wait_for(read_until(c, "synthesize-stopped"), BOUND)

    events = asyncio.run(scenario())
    assert audio_of(events) == expected_stream_pcm(reference, registry, voice, [["Hello there my "], ["friend."]], SEED)


# ---------------------------------------------------------------------- several clients, departures
def test_concurrent_clients_wait_for_the_instance_and_none_is_dropped(registry, reference, tmp_path):
    """Four clients at once on one instance with room for one waiter: one speaks, one waits in the pool's
    queue, the others find the queue full and wait their turn in the service. All get their whole audio, one
    after the other: with one instance, no client's audio starts before the previous one's has ended."""
    small = ModelPool(workers=1, queue=1)
    voices = VoiceRegistry(small, tmp_path)
    received: list[tuple[int, str]] = []  # (client, event type) in the order they arrived

    async def one_client(port: int, n: int) -> list[Event]:
        async with client(port) as c:
            await c.write_event(Synthesize(text=TEXT).event())
            events = []
            while (event := await c.read_event()) is not None:
                received.append((n, event.type))
                events.append(event)
                if event.type == "audio-stop":
                    return events
            pytest.fail(f"client {n}: the connection closed before audio-stop")

    async def scenario():
        async with running(small, voices, seed=SEED) as port:
            return await asyncio.wait_for(asyncio.gather(*(one_client(port, n) for n in range(4))), BOUND)

    try:
        results = asyncio.run(scenario())
    finally:
        small.close()
    expected = expected_pcm(reference, registry, small.voice_names[0], TEXT, SEED)
    assert [audio_of(events) == expected for events in results] == [True] * 4
    audio = [n for n, kind in received if kind in ("audio-chunk", "audio-stop")]
    runs = [n for i, n in enumerate(audio) if i == 0 or audio[i - 1] != n]
    assert sorted(runs) == [0, 1, 2, 3], f"the clients' audio interleaved: {runs}"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_client_leaving_mid_audio_stops_its_generation(pool, registry, caplog, streamed):
    caplog.set_level(logging.INFO, logger=LOGGER)
    long_text = "".join(f"Sentence number {i} is spoken here. " for i in range(110))

    async def scenario():
        async with running(pool, registry, seed=SEED) as port:
            c = client(port)
            await c.connect()
            if streamed:
                await c.write_event(SynthesizeStart().event())
                await c.write_event(SynthesizeChunk(text=long_text).event())  # no synthesize-stop
            else:
                await c.write_event(Synthesize(text=long_text).event())
            events = [await c.read_event() for _ in range(3)]
            assert [e.type for e in events] == ["audio-start", "audio-chunk", "audio-chunk"]
            assert pool.busy == 1, "the audio came only after the generation ended, not as it was decoded"
            await c.disconnect()
            await until(lambda: pool.busy == 0, "the instance back in the pool")
            assert (await describe(port)).tts
            return audio_of(await synthesize(port, "Still here."))

    assert len(asyncio.run(scenario())) > 0
    finished = [r.getMessage() for r in caplog.records if "chars=" in r.getMessage()]
    assert len(finished) == 2 and finished[0].endswith(("client left", "stopped")), finished
    seconds = float(finished[0].split("audio_s=")[1].split()[0])
    assert seconds < 10, "the whole text was generated for a client that had left"


def test_a_client_that_half_closes_after_its_request_gets_all_its_audio(pool, registry, reference):
    async def scenario():
        async with running(pool, registry, seed=SEED) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await async_write_event(Synthesize(text=TEXT).event(), writer)
            writer.write_eof()
            events = []
            while (event := await asyncio.wait_for(async_read_event(reader), BOUND)) is not None:
                events.append(event)
            writer.close()
            return events

    events = asyncio.run(scenario())
    assert events[-1].type == "audio-stop"
    assert audio_of(events) == expected_pcm(reference, registry, pool.voice_names[0], TEXT, SEED)


# ---------------------------------------------------------------------- bad events
def _header(d) -> bytes:
    return json.dumps(d).encode() + b"\n"


def _event(event_type: str, data) -> bytes:
    return _header({"type": event_type, "data": data})


_CAP = 200  # max_chars of the service under the corpus
_DESCRIBE = _header({"type": "describe"})
# (name, bytes sent, expected): an error code (then the connection closes), "answered" (the same connection
# still answers a describe sent after it), or "closed" (the client went away mid-event).
BAD_EVENTS = [
    ("garbage bytes", b"\x00\xff\xfe\x80 garbage\n", "bad-event"),
    ("not json", b"hello wyoming\n", "bad-event"),
    ("invalid utf-8", b'{"type": "describe\xff"}\n', "bad-event"),
    ("json array", b"[1, 2, 3]\n", "bad-event"),
    ("json string", b'"synthesize"\n', "bad-event"),
    ("json number", b"42\n", "bad-event"),
    ("json null", b"null\n", "bad-event"),
    ("nested too deep", b"[" * 30000 + b"]" * 30000 + b"\n", "bad-event"),
    ("no type", _header({"data": {"text": "hi"}}), "bad-event"),
    ("type a number", _header({"type": 5}), "answered"),
    ("type a list", _header({"type": ["synthesize"]}), "answered"),
    ("type an object", _header({"type": {"synthesize": 1}}), "answered"),
    ("unknown type", _event("frobnicate", {"x": 1}), "answered"),
    ("ping", _header({"type": "ping"}), "answered"),
    ("data_length a string", _header({"type": "synthesize", "data_length": "abc"}), "bad-event"),
    ("data_length a float", _header({"type": "synthesize", "data_length": 1.5}), "event-too-large"),
    ("data_length huge", _header({"type": "synthesize", "data_length": 10**12}), "event-too-large"),
    ("data_length negative", _header({"type": "describe", "data_length": -5}), "answered"),
    ("data_length NaN", b'{"type": "describe", "data_length": NaN}\n', "answered"),
    ("payload_length huge", _header({"type": "audio-chunk", "payload_length": 10**9}), "event-too-large"),
    ("payload_length a list", _header({"type": "audio-chunk", "payload_length": [1]}), "bad-event"),
    ("payload on an unknown event", _header({"type": "audio-chunk", "payload_length": 1000}) + bytes(1000), "answered"),
    ("data not json", _header({"type": "synthesize", "data_length": 5}) + b"xxxxx", "bad-event"),
    ("data a json array", _header({"type": "synthesize", "data_length": 2}) + b"[]", "bad-event"),
    ("data a json string", _header({"type": "synthesize", "data_length": 4}) + b'"ab"', "bad-event"),
    ("data truncated", _header({"type": "synthesize", "data_length": 100}) + b'{"text": ', "closed"),
    ("header over the line limit", b'{"type": "synthesize", "data": {"text": "' + b"a" * 70000, "event-too-large"),
    ("version garbage", _header({"type": "describe", "version": [1, {"a": None}]}), "answered"),
    ("data a list", _header({"type": "synthesize", "data": [1, 2]}), "bad-event"),
    ("synthesize without text", _event("synthesize", {}), "bad-event"),
    ("text a number", _event("synthesize", {"text": 5}), "bad-event"),
    ("text a list", _event("synthesize", {"text": ["hi"]}), "bad-event"),
    ("text null", _event("synthesize", {"text": None}), "bad-event"),
    ("text empty", _event("synthesize", {"text": "   "}), "empty-text"),
    ("text a lone surrogate", b'{"type": "synthesize", "data": {"text": "hi \\ud800"}}\n', "bad-text"),
    ("text over the cap", _event("synthesize", {"text": "a" * (_CAP + 1)}), "text-too-long"),
    ("text of 60 kB", _event("synthesize", {"text": "word " * 12000}), "text-too-long"),
    ("voice a number", _event("synthesize", {"text": "hi", "voice": 5}), "bad-event"),
    ("voice a list", _event("synthesize", {"text": "hi", "voice": ["name"]}), "bad-event"),
    ("voice name a number", _event("synthesize", {"text": "hi", "voice": {"name": 5}}), "bad-event"),
    ("voice name an object", _event("synthesize-start", {"voice": {"name": {"a": 1}}}), "bad-event"),
    ("chunk outside a stream", _event("synthesize-chunk", {"text": "hi. "}), "bad-sequence"),
    ("stop outside a stream", _header({"type": "synthesize-stop"}), "bad-sequence"),
    ("start twice", _header({"type": "synthesize-start"}) * 2, "bad-sequence"),
    ("chunk without text", _header({"type": "synthesize-start"}) + _event("synthesize-chunk", {}), "bad-event"),
    (
        "chunk text a number",
        _header({"type": "synthesize-start"}) + _event("synthesize-chunk", {"text": 1}),
        "bad-event",
    ),
    (
        "stream over the cap",
        _header({"type": "synthesize-start"}) + _event("synthesize-chunk", {"text": "word " * 30}) * 2,
        "text-too-long",
    ),
]


async def _exchange(port: int, sent: bytes, expected: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        if expected == "closed":
            writer.write_eof()
        elif expected == "answered":
            writer.write(_DESCRIBE)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        events = []
        with contextlib.suppress(ConnectionError):  # a reset by a server that refused unread bytes
            while (event := await asyncio.wait_for(async_read_event(reader), BOUND)) is not None:
                events.append(event)
                if event.type in ("info", "error"):
                    break
        types = [e.type for e in events]
        if expected == "answered":
            assert types == ["info"], types
        elif expected == "closed":
            assert types == [], types
        elif expected == "event-too-large" and not events:
            pass  # refused mid-upload: the reset can overtake the error event
        else:  # a stream's audio starts as soon as it opens: its audio-start may come before the error
            assert types[-1:] == ["error"] and set(types[:-1]) <= {"audio-start"}, types
            assert Error.from_event(events[-1]).code == expected
            try:
                rest = await asyncio.wait_for(reader.read(), BOUND)
            except ConnectionError:
                rest = b""
            assert rest == b"", "the connection stays open after an error"
    finally:
        writer.close()


def test_bad_events_never_hurt_the_service(pool, registry, reference, caplog):
    assert len(BAD_EVENTS) >= 40
    caplog.set_level(logging.ERROR, logger="asyncio")
    failures = []

    async def scenario():
        async with running(pool, registry, seed=SEED, max_chars=_CAP) as port:
            for name, sent, expected in BAD_EVENTS:
                try:
                    await _exchange(port, sent, expected)
                    assert (await describe(port)).tts, "no answer to describe"
                except AssertionError as e:
                    failures.append(f"{name}: {e}")
            await until(lambda: pool.busy == 0, "no instance left busy")
            return await synthesize(port, TEXT)

    events = asyncio.run(scenario())
    gc.collect()  # a handler task that died of an exception logs it when collected
    assert failures == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert audio_of(events) == expected_pcm(reference, registry, pool.voice_names[0], TEXT, SEED)


# ---------------------------------------------------------------------- starting, zeroconf
def test_serve_wyoming_refuses_what_it_cannot_serve(pool, registry):
    async def start(uri: str, **kwargs) -> None:
        await asyncio.wait_for(serve_wyoming(uri, pool, registry, stop=asyncio.Event(), **kwargs), BOUND)

    with pytest.raises(WyomingServiceError, match="tcp://HOST:PORT"):
        asyncio.run(start("stdio://"))
    with pytest.raises(WyomingServiceError, match="port"):
        asyncio.run(start("tcp://127.0.0.1"))
    with pytest.raises(WyomingServiceError, match="seed"):
        asyncio.run(start(f"tcp://127.0.0.1:{free_port()}", seed=-1))
    with pytest.raises(WyomingServiceError, match="max_chars"):
        asyncio.run(start(f"tcp://127.0.0.1:{free_port()}", max_chars=0))
    with pytest.raises(UnknownVoice):
        asyncio.run(start(f"tcp://127.0.0.1:{free_port()}", voice="no-such-voice"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(WyomingServiceError, match="cannot listen"):
            asyncio.run(start(f"tcp://127.0.0.1:{taken.getsockname()[1]}"))


def test_serves_a_unix_socket_too(pool, registry, tmp_path):
    path = tmp_path / "wyoming.sock"

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(serve_wyoming(f"unix://{path}", pool, registry, stop=stop))
        await until(lambda: path.exists() or task.done(), "the socket file")
        try:
            async with AsyncUnixClient(path, connect_timeout=BOUND, read_timeout=BOUND) as c:
                await c.write_event(Describe().event())
                return Info.from_event((await read_until(c, "info"))[-1])
        finally:
            stop.set()
            await asyncio.wait_for(task, BOUND)

    assert asyncio.run(scenario()).tts[0].voices


def test_pocket_serve_speaks_wyoming_beside_http(registry, reference):
    """The real CLI as a subprocess: `pocket-serve --wyoming tcp://127.0.0.1:PORT --seed N` with HTTP on too."""
    port = free_port()

    async def scenario():
        for _ in range(int(BOUND / 0.1)):  # HTTP answers first; the Wyoming side binds in the same loop
            try:
                return await synthesize(port, TEXT)
            except OSError:
                await asyncio.sleep(0.1)
        pytest.fail("the Wyoming side of pocket-serve did not start listening")

    with running_server("--workers", "1", "--wyoming", f"tcp://127.0.0.1:{port}", "--seed", str(SEED)) as server:
        events = asyncio.run(scenario())
        assert server.alive()
    assert audio_of(events) == expected_pcm(reference, registry, reference.voice_names[0], TEXT, SEED)


def test_zeroconf_service_info():
    info = zeroconf_service_info("pocket-ggml-kitchen", "192.168.1.20", 10200)
    assert SERVICE_TYPE == "_wyoming._tcp.local."
    assert (info.type, info.name, info.port) == (SERVICE_TYPE, "pocket-ggml-kitchen._wyoming._tcp.local.", 10200)
    assert info.parsed_addresses() == ["192.168.1.20"]


def test_zeroconf_missing_degrades_to_a_warning(pool, registry, monkeypatch, caplog):
    """No network here: the import fails before any socket is opened."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    monkeypatch.setitem(sys.modules, "zeroconf.asyncio", None)  # as if the package were not installed

    async def scenario():
        async with running(pool, registry, zeroconf=True) as port:
            return await describe(port)

    assert asyncio.run(scenario()).tts
    assert any("needs the zeroconf package" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("config", "languages"),
    [("english", ["en"]), ("english_2026-04_24l", ["en"]), ("french_24l", ["fr"]), ("dutch", ["nl"]), ("x", ["x"])],
)
def test_model_languages(config, languages):
    assert model_languages(config) == languages


def test_audio_chunks_are_16_bit_mono_frames(pool, registry):
    async def scenario():
        async with running(pool, registry, seed=SEED) as port:
            return await synthesize(port, TEXT)

    chunks = [AudioChunk.from_event(e) for e in asyncio.run(scenario()) if AudioChunk.is_type(e.type)]
    frame = pool.sample_rate * 2 * 2 // 25  # bytes in 80 ms of 16-bit samples
    assert {(c.rate, c.width, c.channels) for c in chunks} == {(24000, 2, 1)}
    assert {len(c.audio) for c in chunks} == {frame}
    assert [c.timestamp for c in chunks] == [80 * i for i in range(len(chunks))]
    assert np.frombuffer(b"".join(c.audio for c in chunks), "<i2").any()
