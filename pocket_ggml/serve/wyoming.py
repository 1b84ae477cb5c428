"""A Wyoming-protocol TTS service: how Home Assistant's voice pipeline speaks to a local TTS (as wyoming-piper
plugs Piper in). Built on the `wyoming` package: its event types, `AsyncServer` and `AsyncEventHandler`.

- `describe` -> `info`: one TTS program whose voices are those stored in the model and those registered with
  the HTTP server (the same registry), in the model's language; `supports_synthesize_streaming`.
- `synthesize` -> `audio-start` (24 kHz, 16-bit, mono), one `audio-chunk` per decoded 80 ms frame, `audio-stop`.
- `synthesize-start`, `synthesize-chunk`*, `synthesize-stop` (Home Assistant sends an LLM's answer while it is
  being written): each sentence is spoken as soon as it is complete in the incoming text (where
  `TTSModel.generate_audio_for_text_stream` ends it: after . ! or ? and the white space that follows, never at
  a decimal point), while later text still arrives; one `audio-start` ... `audio-stop` around all of it, then
  `synthesize-stopped`. A sentence is prompted while it is written (its complete words, on the instance that
  will speak it), so that when it ends only its last tokens, a FlowLM step and a Mimi frame stand before its
  first audio. The `synthesize` that Home Assistant repeats inside a stream, for services that do not stream,
  is ignored there.

Seeds: with `seed=N` every `synthesize` is generated with seed N, so its audio equals
`TTSModel.generate_audio(voice, text, seed=N)`; the k-th sentence (from 0) of a streamed request gets seed N + k,
so a stream equals its sentences generated one by one. Without a seed each request draws one, and logs it.

Requests share the HTTP server's instances: one is borrowed per request (per sentence when streaming: from
its first words to the end of its audio, so a slow LLM holds none between sentences; a sentence whose next
text does not come within `SENTENCE_WAIT` seconds is spoken as it stands, and what comes later starts a new
one). A Wyoming client cannot retry later the way an HTTP client is told to, so
when the pool's queue is full it waits its turn here: no client is turned away.

An unknown voice is spoken in the default voice with a logged warning, as wyoming-piper does: Home Assistant
keeps the voice chosen in a pipeline, and a registered voice can be deleted at any time through the HTTP API;
speaking in another voice beats a voice assistant that goes silent.

A request the service cannot do (text over the cap, an event missing a field or of the wrong type, events out
of order, oversized or unreadable framing) gets an `error` event and the connection is closed: a client waiting
for `audio-stop` would otherwise wait forever. Events of unknown types are ignored.

A client that disconnects stops its generation within a frame: at once when its connection is reset (as it is
when audio was left unread), else at the next chunk that cannot be sent; a client that only closed its sending
side after its request still gets all its audio (wyoming's own handler serves it so). A client that stops
reading is dropped after `write_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import queue
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
from urllib.parse import urlparse

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from pocket_ggml.errors import Overloaded, PocketError, TextError, UnknownVoice, WyomingServiceError
from pocket_ggml.runtime.text import SentencePieces
from pocket_ggml.serve.formats import pcm16
from pocket_ggml.serve.pool import ModelPool
from pocket_ggml.serve.registry import VoiceRegistry

logger = logging.getLogger(__name__)

DEFAULT_PORT = 10200  # what Wyoming TTS services listen on
MAX_CHARS = 4096  # per request (a streamed one counts all its chunks), as the HTTP API caps its input
WRITE_TIMEOUT = 30.0  # seconds a client may leave its audio unread before it is taken for gone
MAX_PENDING_REQUESTS = 4  # requests of one connection received while an earlier one is still spoken
SERVICE_TYPE = "_wyoming._tcp.local."
_HEADER_LIMIT = 2**16  # asyncio's StreamReader limit: the longest event header line the server reads
_SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
_KYUTAI = Attribution(name="Kyutai", url="https://github.com/kyutai-labs/pocket-tts")
_REGISTERED = Attribution(name="registered on this server", url="")
# Language families of the released configs ("english_2026-04", "french_24l", ...), as BCP 47 codes.
_LANGUAGES = {
    "english": "en",
    "french": "fr",
    "german": "de",
    "spanish": "es",
    "italian": "it",
    "portuguese": "pt",
    "dutch": "nl",
}


class _Refusal(Exception):
    """A request or event the service does not do: sent to the client as an `error` event with this code."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


class _ClientGone(Exception):
    """The client disconnected or stopped reading."""


def model_languages(config_name: str) -> list[str]:
    """The language of a model from its config name; a config of no known family is named as it is."""
    family = config_name.split("_")[0].lower()
    return [_LANGUAGES.get(family, family)]


def build_info(pool: ModelPool, registry: VoiceRegistry) -> Info:
    languages = model_languages(pool.config.name)
    try:
        version = metadata.version("pocket-ggml")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        version = None
    voices = [
        TtsVoice(
            name=voice.id,  # what a `synthesize` names
            description=voice.name if voice.source == "model" else f"{voice.name} (registered)",
            attribution=_KYUTAI if voice.source == "model" else _REGISTERED,
            installed=True,
            version=None,
            languages=languages,
        )
        for voice in registry.list()
    ]
    program = TtsProgram(
        name="pocket-ggml",
        description=f"Kyutai Pocket TTS on GGML ({pool.model_name})",
        attribution=_KYUTAI,
        installed=True,
        version=version,
        voices=voices,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


# Seconds a streamed sentence may wait for its next text: it holds an instance meanwhile (what it was
# prompted with lives there), so a client that stops writing mid-sentence has it spoken as it stands.
SENTENCE_WAIT = 10.0


class _SentenceText:
    """One sentence of a streamed request, its text handed to the generation's thread as it arrives (the
    thread iterates it); `end` closes it. A sentence that waits longer than `wait` seconds for its next
    text closes itself: `put` then returns False, and the text belongs to a new sentence."""

    def __init__(self, wait: float) -> None:
        self._texts: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._wait = wait
        self._lock = threading.Lock()
        self._closed = False

    def put(self, text: str) -> bool:
        with self._lock:
            if not self._closed:
                self._texts.put(text)
            return not self._closed

    def end(self) -> None:
        with self._lock:
            self._closed = True
            self._texts.put(None)

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                text = self._texts.get(timeout=self._wait)
            except queue.Empty:
                with self._lock:
                    if self._texts.empty():
                        self._closed = True
                        return
                continue
            if text is None:
                return
            yield text


class _Utterance:
    """One request's text as the speaker takes it: the whole text of a `synthesize`, or the sentences of a
    streamed request (`_SentenceText`s, each queued as soon as its first words arrive, and cut where
    `TTSModel.generate_audio_for_text_stream` ends sentences); None ends it."""

    def __init__(self, voice: str | None, seed: int, cutter: SentencePieces | None, max_chars: int):
        self.voice = voice
        self.seed = seed
        self.streamed = cutter is not None
        self.texts: asyncio.Queue[str | _SentenceText | None] = asyncio.Queue()
        self.chars = 0
        self.first_text_at: float | None = None  # when its first sentence was complete
        self._max_chars = max_chars
        self._cutter = cutter
        self._sentence: _SentenceText | None = None  # the one being written

    def add(self, text: str) -> None:
        self.chars += len(text)
        if self.chars > self._max_chars:
            raise _Refusal("text-too-long", f"the text is longer than {self._max_chars} characters")
        if self._cutter is None:
            self._complete()
            self.texts.put_nowait(text)
            return
        for piece, ends in self._cutter.feed(text):
            self._continue(piece)
            if ends:
                self._end_sentence()

    def finish(self) -> None:
        if self._cutter is not None:
            self._continue(self._cutter.close())
            self._end_sentence()
        self.texts.put_nowait(None)

    def _continue(self, piece: str) -> None:
        if self._sentence is not None and self._sentence.put(piece):
            return
        if not piece.strip():
            self._sentence = None  # white space starts no sentence
            return
        self._sentence = _SentenceText(SENTENCE_WAIT)
        self._sentence.put(piece)
        self.texts.put_nowait(self._sentence)

    def _end_sentence(self) -> None:
        if self._sentence is not None:
            self._sentence.end()
            self._sentence = None
        self._complete()

    def _complete(self) -> None:
        if self.first_text_at is None:
            self.first_text_at = time.monotonic()


class _Sent:
    """The audio sent for one request so far."""

    def __init__(self) -> None:
        self.samples = 0
        self.first_at: float | None = None  # when its first chunk was sent


class _BoundedReader:
    """The connection's StreamReader as wyoming's `async_read_event` uses it, refusing an event whose declared
    data or payload is longer than `limit` before reading it: wyoming would buffer whatever length a client
    declares. `refused` says why it refused."""

    def __init__(self, reader: asyncio.StreamReader, limit: int):
        self._reader = reader
        self._limit = limit
        self.refused: str | None = None

    async def readline(self) -> bytes:
        try:
            return await self._reader.readline()
        except ValueError:  # no newline within the reader's limit
            self.refused = f"an event header longer than {_HEADER_LIMIT} bytes"
            raise

    async def readexactly(self, n: int) -> bytes:
        if isinstance(n, bool) or not isinstance(n, int) or n > self._limit:
            self.refused = f"an event declaring {str(n)[:20]} bytes of data or payload (at most {self._limit})"
            raise ValueError(self.refused)
        return await self._reader.readexactly(n)

    def at_eof(self) -> bool:
        return self._reader.at_eof()

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class WyomingService:
    """What the connections share: the pool, the registry and the service's settings."""

    def __init__(
        self,
        pool: ModelPool,
        registry: VoiceRegistry,
        *,
        max_chars: int = MAX_CHARS,
        seed: int | None = None,
        voice: str | None = None,
        write_timeout: float = WRITE_TIMEOUT,
    ):
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise WyomingServiceError(f"max_chars must be a positive integer, got {max_chars!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise WyomingServiceError(f"the seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
        if not isinstance(write_timeout, (int, float)) or not write_timeout > 0:
            raise WyomingServiceError(f"write_timeout must be a positive number of seconds, got {write_timeout!r}")
        self.pool = pool
        self.registry = registry
        self.max_chars = max_chars
        self.seed = seed
        self.voice = voice
        self.write_timeout = float(write_timeout)
        # The most data an event carrying max_chars characters can need: 12 bytes per character at worst (an
        # astral character as two \\u escapes), and room for its other fields.
        self.event_limit = 2**16 + 12 * max_chars
        self.connections: set[asyncio.Task] = set()  # the handlers' tasks

    async def check(self) -> None:
        """Fail now, not at the first request, when the default voice given is not a voice."""
        if self.voice is not None:
            await self.registry.state(self.voice)
        elif self.default_voice() is None:
            logger.warning("the model stores no voice and none is registered: requests fail until one is")

    def default_voice(self) -> str | None:
        if self.voice is not None:
            return self.voice
        if self.registry.default_voice is not None:
            return self.registry.default_voice
        voices = self.registry.list()
        return voices[0].id if voices else None

    def request_seed(self) -> int:
        return self.seed if self.seed is not None else secrets.randbits(63)

    def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Connection:
        return _Connection(self, reader, writer)

    async def finished(self) -> None:
        """Until every connection's handler has returned (their generations stopped)."""
        await asyncio.gather(*self.connections, return_exceptions=True)


class _Connection(AsyncEventHandler):
    """One client. Its events are read here while a speaker task speaks its requests in order, so that text
    keeps arriving while audio is sent, and a disconnect is seen at once."""

    def __init__(self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(_BoundedReader(reader, service.event_limit), writer)
        self.service = service
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "local")
        self._requests: asyncio.Queue[_Utterance | None] = asyncio.Queue()
        self._open: _Utterance | None = None  # the streamed request whose text is still arriving
        self._speaker: asyncio.Task | None = None

    # ------------------------------------------------------------------ reading
    async def run(self) -> None:
        self._is_running = True
        task = asyncio.current_task()
        self.service.connections.add(task)
        self._speaker = asyncio.create_task(self._speak_requests(), name="wyoming speaker")
        client_gone = False
        try:
            while self._is_running:
                try:
                    event = await async_read_event(self.reader)
                except (ConnectionError, asyncio.IncompleteReadError):
                    client_gone = True
                    break
                except Exception as e:  # noqa: BLE001 - framing wyoming's reader lets through: a header that
                    # is not an object, lengths that are not numbers, JSON nested deeper than Python parses
                    await self._refuse(_Refusal("bad-event", f"unreadable event ({type(e).__name__})"))
                    break
                if event is None:
                    if self.reader.refused is not None:
                        await self._refuse(_Refusal("event-too-large", f"refused {self.reader.refused}"))
                    elif not self.reader.at_eof():
                        await self._refuse(_Refusal("bad-event", "an event that is not a JSON header line"))
                    break
                try:
                    await self.handle_event(event)
                except _Refusal as refusal:
                    await self._refuse(refusal)
                    break
                except _ClientGone:
                    client_gone = True
                    break
            if self._is_running and not client_gone and self._open is None:
                # The client closed its side after sending its requests (as `nc` does): speak them. A client
                # that is gone altogether makes the next write fail, which ends the speaker within a frame.
                self._requests.put_nowait(None)
                await self._speaker
        finally:
            self._speaker.cancel()
            await asyncio.gather(self._speaker, return_exceptions=True)
            self.writer.close()
            self.service.connections.discard(task)

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            info = await asyncio.to_thread(build_info, self.service.pool, self.service.registry)
            await self._write(info.event())
        elif Synthesize.is_type(event.type):
            if self._open is not None:
                return True  # the whole text again, sent inside a stream for services that do not stream
            request = _parse(Synthesize, event)
            text = _text(request.text)
            if not text.strip():
                raise _Refusal("empty-text", "the text is empty")
            if len(text) > self.service.max_chars:
                raise _Refusal("text-too-long", f"the text is longer than {self.service.max_chars} characters")
            utterance = self._new_utterance(request.voice, streamed=False)
            utterance.add(text)
            utterance.finish()
        elif SynthesizeStart.is_type(event.type):
            if self._open is not None:
                raise _Refusal("bad-sequence", "synthesize-start inside a stream (send synthesize-stop first)")
            request = _parse(SynthesizeStart, event)
            self._open = self._new_utterance(request.voice, streamed=True)
        elif SynthesizeChunk.is_type(event.type):
            if self._open is None:
                raise _Refusal("bad-sequence", "synthesize-chunk outside a stream (send synthesize-start first)")
            self._open.add(_text(_parse(SynthesizeChunk, event).text))
        elif SynthesizeStop.is_type(event.type):
            if self._open is None:
                raise _Refusal("bad-sequence", "synthesize-stop outside a stream")
            self._open.finish()
            self._open = None
        else:
            logger.debug("wyoming %s: ignored an event of type %.40r", self.peer, event.type)
        return True

    def _new_utterance(self, voice: SynthesizeVoice | None, streamed: bool) -> _Utterance:
        name = None if voice is None else voice.name
        if name is not None and not isinstance(name, str):
            raise _Refusal("bad-event", "the voice name must be a string")
        if self._requests.qsize() >= MAX_PENDING_REQUESTS:
            raise _Refusal("too-many-requests", f"more than {MAX_PENDING_REQUESTS} requests waiting to be spoken")
        cutter = self.service.pool.sentence_pieces() if streamed else None
        utterance = _Utterance(name, self.service.request_seed(), cutter, self.service.max_chars)
        self._requests.put_nowait(utterance)
        return utterance

    # ------------------------------------------------------------------ speaking
    async def _speak_requests(self) -> None:
        try:
            while (utterance := await self._requests.get()) is not None:
                await self._speak(utterance)
        except _ClientGone:
            self._end()
        except _Refusal as refusal:
            await self._refuse(refusal)
        except PocketError as e:
            await self._refuse(_Refusal(type(e).__name__, str(e)))
        except Exception:  # a fault of ours: this client gets an error, the service carries on
            logger.exception("wyoming %s: synthesis failed", self.peer)
            await self._refuse(_Refusal("internal-error", "the synthesis failed (see the server's log)"))

    async def _speak(self, utterance: _Utterance) -> None:
        rate = self.service.pool.sample_rate
        voice, state = await self._voice_state(utterance.voice)
        started = time.monotonic()
        sent = _Sent()
        outcome = "ok"
        try:
            await self._write(AudioStart(rate=rate, width=_SAMPLE_WIDTH, channels=1, timestamp=0).event())
            index = 0
            while (text := await utterance.texts.get()) is not None:
                seed = utterance.seed + index if utterance.streamed else utterance.seed
                index += 1
                try:
                    await self._play(state, text, seed, sent)
                except TextError:
                    if not utterance.streamed:
                        raise
                    logger.debug("wyoming %s: nothing to say in %.40r", self.peer, text)
            await self._write(AudioStop(timestamp=sent.samples * 1000 // rate).event())
            if utterance.streamed:
                await self._write(SynthesizeStopped().event())
        except _ClientGone:
            outcome = "client left"
            raise
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        except Exception as e:
            outcome = f"failed: {type(e).__name__}"
            raise
        finally:
            first = sent.first_at - utterance.first_text_at if sent.first_at and utterance.first_text_at else None
            logger.info(
                "wyoming %s %s chars=%d voice=%s seed=%d first_audio_ms=%s audio_s=%.2f total_s=%.2f %s",
                self.peer,
                "stream" if utterance.streamed else "synthesize",
                utterance.chars,
                voice,
                utterance.seed,
                "-" if first is None else f"{first * 1000:.0f}",
                sent.samples / rate,
                time.monotonic() - started,
                outcome,
            )

    async def _play(self, state, text: str | _SentenceText, seed: int, sent: _Sent) -> None:
        """Generate `text` on a pool instance and send each chunk as it is decoded. A streamed sentence is
        prompted while it is written: its text is read on the generation's thread as it arrives."""
        pool = self.service.pool
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(text, _SentenceText):
                stack.callback(text.end)  # after the generation stopped: its thread waits for no more text
            model = await stack.enter_async_context(_instance(pool))
            chunks = await stack.enter_async_context(contextlib.aclosing(pool.stream(model, state, text, seed=seed)))
            async for chunk in chunks:
                audio = pcm16(chunk).tobytes()
                timestamp = sent.samples * 1000 // pool.sample_rate
                await self._write(
                    AudioChunk(
                        rate=pool.sample_rate, width=_SAMPLE_WIDTH, channels=1, audio=audio, timestamp=timestamp
                    ).event()
                )
                sent.first_at = sent.first_at or time.monotonic()
                sent.samples += chunk.size

    async def _voice_state(self, name: str | None):
        default = self.service.default_voice()
        if name is not None and name != default:
            try:
                return name, await self.service.registry.state(name)
            except UnknownVoice:
                logger.warning("wyoming %s: unknown voice %.100r, speaking with %r", self.peer, name, default)
        if default is None:
            raise _Refusal("no-voice", "the model stores no voice and none is registered")
        return default, await self.service.registry.state(default)

    # ------------------------------------------------------------------ writing, ending
    async def _write(self, event: Event) -> None:
        try:
            await asyncio.wait_for(async_write_event(event, self.writer), self.service.write_timeout)
        except (ConnectionError, asyncio.TimeoutError) as e:
            raise _ClientGone() from e

    async def _refuse(self, refusal: _Refusal) -> None:
        logger.warning("wyoming %s: %s (%s); closing the connection", self.peer, refusal.text, refusal.code)
        if self._speaker is not None and self._speaker is not asyncio.current_task():
            # Refused while reading: silence the speaker first, so that the error is the last event sent.
            self._speaker.cancel()
            await asyncio.gather(self._speaker, return_exceptions=True)
        with contextlib.suppress(_ClientGone):
            await self._write(Error(text=refusal.text, code=refusal.code).event())
        self._end()

    def _end(self) -> None:
        """Close the connection; the reading loop sees its end."""
        self._is_running = False
        self.writer.close()
        self.reader.feed_eof()

    async def stop(self) -> None:
        if self._speaker is not None:
            self._speaker.cancel()
        await super().stop()


def _parse(kind, event: Event):
    """The event as its wyoming type, or a refusal naming what is wrong with it."""
    if not isinstance(event.data, dict):
        raise _Refusal("bad-event", f"{event.type} data must be a JSON object")
    try:
        return kind.from_event(event)
    except KeyError as e:
        raise _Refusal("bad-event", f"{event.type} needs {e}") from None
    except (TypeError, AttributeError, ValueError):
        raise _Refusal("bad-event", f"{event.type} has a field of the wrong type") from None


def _text(text) -> str:
    if not isinstance(text, str):
        raise _Refusal("bad-event", "the text must be a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \\u escapes can carry
        raise _Refusal("bad-text", "the text is not valid Unicode") from None
    return text


@contextlib.asynccontextmanager
async def _instance(pool: ModelPool) -> AsyncIterator:
    """A pool instance; when the pool's queue is full, wait for room instead of failing."""
    async with contextlib.AsyncExitStack() as stack:
        while True:
            try:
                model = await stack.enter_async_context(pool.instance())
                break
            except Overloaded as e:
                # retry_after is the pool's advice to an HTTP client; a retry from here costs nothing
                wait = min(e.retry_after, 1.0)
                logger.info("wyoming: all instances busy and the queue full; retrying in %g s", wait)
                await asyncio.sleep(wait)
        yield model


# ---------------------------------------------------------------------- zeroconf
def zeroconf_service_info(name: str, host: str, port: int):
    """The mDNS record announcing a Wyoming service at host:port under the instance name `name`."""
    from zeroconf.asyncio import AsyncServiceInfo

    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name[:63]}.{SERVICE_TYPE}",
        addresses=[ipaddress.ip_address(host).packed],
        port=port,
    )


def announced_address(host: str) -> str:
    """The address to announce for a service bound to `host`: a wildcard bind is announced at the address of
    the interface that routes to the mDNS group (connecting a UDP socket sends nothing)."""
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a host name
            return socket.gethostbyname(host)
        if not address.is_unspecified:
            return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))
        return probe.getsockname()[0]


class _Announcement:
    def __init__(self, zeroconf, info):
        self._zeroconf = zeroconf
        self._info = info

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # leaving: a goodbye that fails is of no consequence
            await self._zeroconf.async_unregister_service(self._info)
        await self._zeroconf.async_close()


async def _announce(host: str, port: int, name: str) -> _Announcement | None:
    try:
        from zeroconf.asyncio import AsyncZeroconf
    except ImportError:
        logger.warning("--zeroconf needs the zeroconf package (pip install 'pocket-ggml[serve]'); not announced")
        return None
    try:
        address = announced_address(host)
        if ipaddress.ip_address(address).is_loopback:
            logger.warning("announcing loopback address %s: only this machine can reach it", address)
        info = zeroconf_service_info(name, address, port)
        zeroconf = AsyncZeroconf()
    except (OSError, ValueError) as e:
        logger.warning("zeroconf announcement failed (%s); serving without it", e)
        return None
    try:
        await zeroconf.async_register_service(info)
    except Exception as e:  # noqa: BLE001 - zeroconf's own errors (a name taken) and the network's
        logger.warning("zeroconf announcement failed (%s: %s); serving without it", type(e).__name__, e)
        await zeroconf.async_close()
        return None
    logger.info("announced %s at %s:%d", info.name, address, port)
    return _Announcement(zeroconf, info)


# ---------------------------------------------------------------------- entry point
async def serve_wyoming(
    uri: str,
    pool: ModelPool,
    registry: VoiceRegistry,
    *,
    zeroconf: bool = False,
    zeroconf_name: str | None = None,
    stop: asyncio.Event | None = None,
    **settings,
) -> None:
    """Serve Wyoming on `uri` (tcp://HOST:PORT or unix://PATH) until `stop` is set or the task is cancelled;
    then close every connection, their generations stopped, before returning. `settings` are the
    `WyomingService`'s: `voice`, the default voice (else the model's first stored voice); `seed`, which fixes
    every request's seed (see the module's note); `max_chars`; `write_timeout`."""
    service = WyomingService(pool, registry, **settings)
    await service.check()
    parsed = urlparse(uri)
    if parsed.scheme not in ("tcp", "unix"):
        raise WyomingServiceError(f"{uri!r}: give tcp://HOST:PORT or unix://PATH")
    try:
        server = AsyncServer.from_uri(uri)
    except ValueError as e:
        raise WyomingServiceError(f"{uri!r}: {e}") from None
    try:
        await server.start(service.handler)
    except OSError as e:
        raise WyomingServiceError(f"cannot listen on {uri}: {e.strerror or e}") from None
    announcement = None
    try:
        logger.info("Wyoming TTS service on %s", uri)
        if zeroconf:
            if parsed.scheme != "tcp":
                logger.warning("zeroconf announces tcp:// services only; %s is not announced", uri)
            else:
                name = zeroconf_name or f"pocket-ggml-{socket.gethostname()}"
                announcement = await _announce(parsed.hostname or "", parsed.port, name)
        await (stop.wait() if stop is not None else asyncio.get_running_loop().create_future())
    finally:
        if announcement is not None:
            await announcement.close()
        await server.stop()
        await service.finished()
