"""K loaded instances of one model, lent to requests one at a time, and their audio streamed to async code.

A `TTSModel` generates one stream at a time (its stream runs two threads: the FlowLM step with the first
half of the Mimi decoder, and the rest of the decoder). The pool loads K instances of the same GGUF (the
weights are mapped from the file, so they share its pages) and lends them out with `async with
pool.instance() as model:`. Requests beyond K wait in a bounded queue; beyond that, `Overloaded`.

An instance is given back only when nothing runs on it any more: a generation (or a voice clone) started on
a worker thread keeps its instance until that thread is done, even when the request that started it was
cancelled, so the next borrower never finds it busy.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np

from pocket_ggml.api import TTSModel
from pocket_ggml.errors import Overloaded, PocketError
from pocket_ggml.runtime.model import usable_cpus
from pocket_ggml.voices.state import VoiceState, check_fits

T = TypeVar("T")

# Chunks (80 ms each) decoded ahead of a slow client before the generation waits for it.
READ_AHEAD_CHUNKS = 8


class _Finished:
    """The end of a generation, as passed from its thread: `error` is what it raised, if anything."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def default_workers(cpus: int | None = None) -> int:
    """Instances the CPUs carry: a stream computes on two threads at once (see runtime.model.thread_plan),
    so one instance per two CPUs keeps ggml's barriers from waiting on descheduled threads."""
    return max(1, (usable_cpus() if cpus is None else cpus) // 2)


class ModelPool:
    def __init__(self, model: str | Path | None = None, workers: int | None = None, queue: int = 16, **load_kwargs):
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
            raise PocketError(f"workers must be an integer from 1 to 64, got {workers!r}")
        if isinstance(queue, bool) or not isinstance(queue, int) or queue < 0:
            raise PocketError(f"queue must be a non-negative integer, got {queue!r}")
        self.workers = workers
        self.queue = queue
        self._models = [TTSModel.load_model(model, **load_kwargs) for _ in range(workers)]
        first = self._models[0]
        self.sample_rate = first.sample_rate
        self.model_name = first.model_path.stem
        self.model_path = first.model_path
        self.voice_names = first.voice_names
        self.config = first.config
        self.has_voice_cloning = first.has_voice_cloning
        self.sentence_pieces = first.sentence_pieces
        self.is_synthetic = first.is_synthetic
        self._idle: list[TTSModel] = list(self._models)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._running: set[int] = set()  # ids of instances a worker thread is still using
        self._returned: set[int] = set()  # ... of which the borrower is already done
        self._threads: set[threading.Thread] = set()  # workers still running, joined before the models close
        self._hold_seconds = 5.0  # a running mean of how long a request holds an instance, for Retry-After

    # ------------------------------------------------------------------ lending
    @property
    def busy(self) -> int:
        return self.workers - len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> float:
        """Seconds until an instance is likely free for one more request."""
        return max(1.0, round(self._hold_seconds * (self.waiting + 1) / self.workers))

    @contextlib.asynccontextmanager
    async def instance(self, timeout: float | None = None) -> AsyncIterator[TTSModel]:
        """An idle instance, for the duration of the block. Waits in the queue when all are busy (at most
        `timeout` seconds); raises `Overloaded` when the queue is full or the wait times out."""
        model = await self._acquire(timeout)
        start = time.monotonic()
        try:
            yield model
        finally:
            self._hold_seconds = 0.8 * self._hold_seconds + 0.2 * (time.monotonic() - start)
            self._give_back(model)

    async def _acquire(self, timeout: float | None) -> TTSModel:
        if self._idle and not self._waiters:
            return self._idle.pop()
        if len(self._waiters) >= self.queue:
            raise Overloaded(
                f"all {self.workers} instances are busy and {self.waiting} requests are waiting", self.retry_after()
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            if waiter.done() and not waiter.cancelled():  # handed an instance just as we gave up
                self._give_back(waiter.result())
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(e, asyncio.TimeoutError):
                raise Overloaded(
                    f"no instance became free within {timeout:g} s", self.retry_after(), timed_out=True
                ) from None
            raise

    def _give_back(self, model: TTSModel) -> None:
        if id(model) in self._running:  # its thread still runs: given back when the thread ends
            self._returned.add(id(model))
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(model)
                return
        self._idle.append(model)

    def _thread_done(self, model: TTSModel) -> None:
        self._running.discard(id(model))
        if id(model) in self._returned:
            self._returned.discard(id(model))
            self._give_back(model)

    # ------------------------------------------------------------------ work on worker threads
    async def call(self, model: TTSModel, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)` (a blocking call using `model`, e.g. a voice clone) on a worker thread.
        If the caller is cancelled, the call still finishes before `model` is lent again."""
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        self._running.add(id(model))

        def run() -> None:
            try:
                value, error = fn(*args, **kwargs), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                value, error = None, e
            _call_soon(loop, self._settle, model, result, value, error)

        self._start(run, "pocket-serve-call")
        return await asyncio.shield(result)

    def _settle(self, model: TTSModel, result: asyncio.Future, value, error: BaseException | None) -> None:
        self._thread_done(model)
        if result.cancelled():
            return
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(value)

    async def stream(
        self,
        model: TTSModel,
        voice_state: VoiceState,
        text: str | Iterable[str],
        *,
        seed: int | None = None,
        **kwargs,
    ) -> AsyncIterator[np.ndarray]:
        """The float32 chunks of `model.generate_audio_stream(voice_state, text, seed=seed, **kwargs)` (of
        `generate_audio_for_text_stream` when `text` is an iterable of pieces, read on the worker thread),
        generated on a worker thread at most `READ_AHEAD_CHUNKS` ahead of the consumer. When the consumer
        stops iterating (or is cancelled), the generation is told to stop and ends within a frame."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        credits = threading.Semaphore(READ_AHEAD_CHUNKS)
        stop = threading.Event()
        self._running.add(id(model))

        def produce() -> None:
            ending = _Finished()
            try:
                streamed = not isinstance(text, str)
                generate = model.generate_audio_for_text_stream if streamed else model.generate_audio_stream
                generation = generate(voice_state, text, stop=stop, seed=seed, **kwargs)
                with contextlib.closing(generation):
                    for chunk in generation:
                        while not credits.acquire(timeout=0.05):
                            if stop.is_set():
                                return
                        if stop.is_set() or not _call_soon(loop, chunks.put_nowait, chunk):
                            return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                ending = _Finished(e)
            finally:
                _call_soon(loop, self._stream_done, model, chunks, ending)

        self._start(produce, "pocket-serve-stream")
        try:
            while True:
                item = await chunks.get()
                if isinstance(item, _Finished):
                    if item.error is not None:
                        raise item.error
                    return
                credits.release()
                yield item
        finally:
            stop.set()

    def _start(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            finally:
                self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.add(thread)
        thread.start()

    def _stream_done(self, model: TTSModel, chunks: asyncio.Queue, ending: _Finished) -> None:
        self._thread_done(model)
        chunks.put_nowait(ending)

    # ------------------------------------------------------------------ voices
    def stored_voice(self, name: str) -> VoiceState:
        """The state of a voice stored in the model (read from the mapped file: no instance is borrowed)."""
        return self._models[0].get_state_for_audio_prompt(name)

    def check_voice_state(self, state: VoiceState) -> None:
        """Raise `VoiceStateError` unless `state` was made by a model of this one's FlowLM shape."""
        check_fits(state, self.config.flow_lm)

    def close(self, timeout: float = 10.0) -> None:
        """Free the models once their worker threads are done (a stopped generation ends within a frame);
        a model still computing after `timeout` is left to the process exit rather than freed under it."""
        for thread in list(self._threads):
            thread.join(timeout)
        if not self._threads:
            for model in self._models:
                model.close()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args) -> bool:
    """Run `fn(*args)` on `loop` from another thread; False when the loop is gone (the server stopped)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:
        return False
