"""The HTTP face of pocket-serve: OpenAI's speech API, the official pocket-tts server's `/tts`, a voice registry,
health, models, metrics and the page at `/`.

Every error a client can cause answers with OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`
and a 4xx status; 5xx is left for faults of the server itself. Audio is streamed: the response starts once the
first 80 ms frame is decoded, so anything wrong with a request (text, voice, overload) is still answered with
a status, not a broken stream.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pocket_ggml.errors import Overloaded, PocketError, UnknownVoice
from pocket_ggml.serve.formats import MEDIA_TYPES, UNSUPPORTED, Encoder
from pocket_ggml.serve.metrics import Metrics
from pocket_ggml.serve.pool import ModelPool
from pocket_ggml.serve.registry import MAX_CLIP_BYTES, VoiceRegistry
from pocket_ggml.voices.state import VoiceState

logger = logging.getLogger("pocket_ggml.serve")

STATIC_DIR = Path(__file__).parent / "static"
TTS_UPLOAD_SECONDS = 30  # /tts cuts uploaded clips to their first 30 s, as the official server does
_JSON_BODY_BYTES = 1 << 20  # the largest JSON body: 4096 characters, each escaped, fit many times over
_MAX_SEED = 2**63 - 1
_PUBLIC_PATHS = ("/health",)  # no key needed; the page and its static files carry no data either


class ApiError(StarletteHTTPException):
    """A refusal with its OpenAI error envelope fields. An HTTPException, so that FastAPI lets it through
    from body parsing (where other exceptions become a generic 400)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict | None = None,
    ):
        super().__init__(status, message, headers)
        self.message, self.param, self.code, self.kind = message, param, code, kind


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(e: ApiError, path: str = "") -> JSONResponse:
    body = error_body(e.message, e.kind, e.param, e.code)
    if path == "/tts":  # the official server's clients read FastAPI's `detail`
        body["detail"] = e.message
    return JSONResponse(body, status_code=e.status_code, headers=e.headers)


# ---------------------------------------------------------------------- request bodies
class VoiceRef(BaseModel):
    """OpenAI's newer form of a custom voice: `{"id": "voice-..."}`."""

    model_config = ConfigDict(strict=True, extra="ignore")
    id: str


class SpeechRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(None, description="Accepted and ignored: the server speaks with its loaded model.")
    input: str = Field(description="The text, 1 to max_input_chars characters.")
    voice: str | VoiceRef | None = Field(None, description="A voice stored in the model or a registered voice id.")
    response_format: str = Field("mp3", description="wav, pcm (s16le), flac, mp3 or opus; 24 kHz mono.")
    speed: float = Field(1.0, description="Only 1.0: the model has no rate control.")
    stream_format: str = Field("audio", description="audio (bytes) or sse (speech.audio.delta events).")
    instructions: str | None = Field(None, description="Refused when not empty: the model takes no style prompt.")
    seed: int | None = Field(
        None, ge=0, le=_MAX_SEED, description="Extension: the same seed, text and voice give the same samples."
    )


# ---------------------------------------------------------------------- one request's record
@dataclass
class RequestRecord:
    """What the request log line and the metrics say about one request."""

    id: str
    chars: int | None = None
    voice: str | None = None
    format: str | None = None
    first_byte: float | None = None  # seconds from arrival
    audio_seconds: float = 0.0
    frames: int = 0
    deadline: float | None = None  # time.monotonic() by which the response must be complete
    outcome: str | None = None  # set by handlers for what a status cannot say: disconnected, timeout, aborted


def _record(request: Request) -> RequestRecord:
    return request.scope["state"]["pocket_request"]


class _Front:
    """The layer around the routes (inside only CORS and Starlette's last-resort error handler): request ids,
    the bearer key, body size caps, the time limit on sends, the log line and the request metrics. Plain ASGI,
    so that it sees the real first byte and the end of streamed bodies."""

    def __init__(self, app, *, api_key: str | None, metrics: Metrics, upload_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics
        self.upload_bytes = upload_bytes

    def _body_limit(self, path: str) -> int:
        return self.upload_bytes + (1 << 20) if path in ("/tts", "/v1/audio/voices") else _JSON_BODY_BYTES

    def _authorized(self, scope) -> bool:
        path = scope["path"]
        if self.api_key is None or path in _PUBLIC_PATHS or path == "/" or path.startswith("/static/"):
            return True
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, key = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(key.strip(), self.api_key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        record = RequestRecord(uuid.uuid4().hex[:12])
        scope.setdefault("state", {})["pocket_request"] = record
        status = 0

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", record.id.encode())]
            elif message["type"] == "http.response.body" and message.get("body") and record.first_byte is None:
                record.first_byte = time.monotonic() - start
            if record.deadline is None or message["type"] != "http.response.body":
                await send(message)
                return
            # A client that stops reading stalls the send; past the time limit it loses the stream (and the
            # instance generating it is freed), however slowly it reads.
            try:
                await asyncio.wait_for(send(message), max(0.0, record.deadline - time.monotonic()))
            except asyncio.TimeoutError:
                record.outcome = "timeout"
                raise _Aborted("over the time limit") from None

        limit = self._body_limit(scope["path"])
        received = 0

        async def receiving():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        try:
            if not self._authorized(scope):
                await _send_error(
                    sending,
                    ApiError(
                        401,
                        "a valid bearer key is required",
                        kind="authentication_error",
                        code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"},
                    ),
                )
                return
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limit:
                await _send_error(sending, _too_large(limit))
                return
            await self.app(scope, receiving, sending)
        except _Aborted:  # the stream was cut off on purpose; uvicorn closes the connection
            record.outcome = record.outcome or "aborted"
        except asyncio.CancelledError:
            # Only the server cancels a request's task: uvicorn, when a stream outlasts its graceful shutdown.
            # The request ends here, its generation stopped by the body's cleanup; re-raised, uvicorn would
            # log the cancellation as a crash of the app.
            record.outcome = record.outcome or "cancelled"
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
        except Exception:
            record.outcome = "error"
            raise
        finally:
            self._account(scope, record, status, time.monotonic() - start)

    def _account(self, scope, record: RequestRecord, status: int, seconds: float) -> None:
        outcome = record.outcome or _outcome(status)
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.request(route, outcome, record.first_byte, seconds, record.audio_seconds)
        # the path as sent (still percent-encoded): a decoded %0A must not start a forged log line
        path = scope.get("raw_path") or scope["path"].encode("utf-8", "backslashreplace")
        fields = [record.id, scope["method"], path.decode("latin-1")[:200], str(status or "-"), outcome]
        if record.chars is not None:
            rtf = seconds / record.audio_seconds if record.audio_seconds else None
            fields += [
                f"chars={record.chars}",
                f"voice={record.voice}",
                f"format={record.format}",
                f"first_byte_ms={record.first_byte * 1000:.0f}" if record.first_byte is not None else "first_byte_ms=-",
                f"audio_s={record.audio_seconds:.2f}",
                f"rtf={rtf:.3f}" if rtf is not None else "rtf=-",
            ]
        fields.append(f"total_ms={seconds * 1000:.0f}")
        logger.info(" ".join(fields))


def _outcome(status: int) -> str:
    if 200 <= status < 400:
        return "ok"
    if status in (429, 503):
        return "overloaded"
    if 400 <= status < 500:
        return "refused"
    return "error"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes", code="body_too_large")


async def _send_error(send, e: ApiError) -> None:
    response = error_response(e)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


# ---------------------------------------------------------------------- the app
def create_app(
    pool: ModelPool,
    registry: VoiceRegistry,
    *,
    api_key: str | None = None,
    cors: list[str] | None = None,
    request_timeout: float = 600.0,
    queue_timeout: float = 30.0,
    max_input_chars: int = 4096,
    max_upload_bytes: int = MAX_CLIP_BYTES,
    seed: int | None = None,
) -> FastAPI:
    """The ASGI app over a loaded `pool` and its `registry`. `request_timeout` bounds a request's whole
    life (queue wait + generation; a stream over it is cut off), `queue_timeout` the wait for an instance;
    `seed` is that of requests that give none (None: a fresh one each time)."""
    metrics = Metrics(pool)
    app = FastAPI(title="pocket-serve", description="Pocket TTS on GGML: OpenAI-compatible speech", version="1")
    app.state.pool, app.state.registry, app.state.metrics = pool, registry, metrics
    speaker = _Speaker(pool, request_timeout, queue_timeout)
    _install_error_handlers(app)

    # ------------------------------------------------------------------ health, models, metrics, page
    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "healthy",
            "model": pool.model_name,
            "workers": pool.workers,
            "busy": pool.busy,
            "waiting": pool.waiting,
        }

    created = int(pool.model_path.stat().st_mtime)

    def model_card() -> dict:
        return {"id": pool.model_name, "object": "model", "created": created, "owned_by": "pocket-ggml"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict:
        if model_id != pool.model_name:
            raise ApiError(
                404,
                f"unknown model {model_id[:100]!r}; this server has {pool.model_name!r}",
                param="model",
                code="model_not_found",
            )
        return model_card()

    @app.get("/metrics")
    async def metrics_text() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            raise ApiError(404, "this installation has no web page", code="not_found")
        return FileResponse(index, media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        # Only files that sit directly in the package's static folder; a name is never joined unchecked.
        files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()} if STATIC_DIR.is_dir() else {}
        if name not in files:
            raise ApiError(404, "no such file", code="not_found")
        return FileResponse(files[name])

    # ------------------------------------------------------------------ OpenAI speech
    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest, request: Request) -> StreamingResponse:
        record = _record(request)
        fmt = body.response_format
        if fmt in UNSUPPORTED:
            raise ApiError(400, UNSUPPORTED[fmt], param="response_format", code="unsupported_format")
        if fmt not in MEDIA_TYPES:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(MEDIA_TYPES)}; got {fmt[:50]!r}",
                param="response_format",
                code="invalid_value",
            )
        if body.speed != 1.0:
            raise ApiError(
                400,
                "speed must be 1.0: the model has no rate control, and a faked one would distort the voice",
                param="speed",
                code="unsupported_value",
            )
        if body.stream_format not in ("audio", "sse"):
            raise ApiError(400, "stream_format must be audio or sse", param="stream_format", code="invalid_value")
        if body.instructions and body.instructions.strip():
            raise ApiError(
                400,
                "instructions are not supported: the model takes no style prompt",
                param="instructions",
                code="unsupported_value",
            )
        text = _checked_text(body.input, "input", max_input_chars)
        voice = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
        record.chars, record.format = len(text), fmt
        state, record.voice = await _voice_state(registry, voice, "voice")
        chunks = await _unless_client_leaves(
            request, speaker.start(record, state, text, seed if body.seed is None else body.seed, fmt)
        )
        if body.stream_format == "sse":
            return _AudioStream(
                _sse(chunks, record), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        return _AudioStream(chunks, media_type=MEDIA_TYPES[fmt])

    # ------------------------------------------------------------------ the official server's /tts
    @app.post("/tts")
    async def tts(
        request: Request,
        text: Annotated[str, Form()],
        voice_url: Annotated[str | None, Form()] = None,
        voice_wav: Annotated[UploadFile | None, File()] = None,
    ) -> StreamingResponse:
        record = _record(request)
        text = _checked_text(text, "text", max_input_chars)
        if voice_url is not None and voice_wav is not None:
            raise ApiError(400, "give voice_url or voice_wav, not both", param="voice_url", code="invalid_value")
        record.chars, record.format = len(text), "wav"
        if voice_wav is not None:
            audio = await _read_upload(voice_wav, max_upload_bytes, "voice_wav")
            state = await _refusing(
                registry.clone(audio, truncate_seconds=TTS_UPLOAD_SECONDS, timeout=queue_timeout), "voice_wav"
            )
            record.voice = "upload"
        else:
            if voice_url is not None and voice_url.startswith(("http://", "https://", "hf://")):
                raise ApiError(
                    400,
                    "this server does not fetch voices from URLs; register the clip with "
                    "POST /v1/audio/voices and pass its id",
                    param="voice_url",
                    code="unsupported_value",
                )
            state, record.voice = await _voice_state(registry, voice_url, "voice_url")
        chunks = await _unless_client_leaves(request, speaker.start(record, state, text, seed, "wav"))
        return _AudioStream(
            chunks, media_type="audio/wav", headers={"Content-Disposition": "attachment; filename=generated_speech.wav"}
        )

    # ------------------------------------------------------------------ voices
    @app.get("/v1/audio/voices")
    async def voices() -> dict:
        return {"object": "list", "default": registry.default_voice, "data": [v.as_dict() for v in registry.list()]}

    @app.post("/v1/audio/voices", status_code=201)
    async def register_voice(
        file: Annotated[UploadFile, File(description="A clip of the voice, <= 120 s, any format soundfile reads")],
        name: Annotated[str | None, Form()] = None,
    ) -> dict:
        audio = await _read_upload(file, max_upload_bytes, "file")
        info = await _refusing(registry.register(audio, name, timeout=queue_timeout), "file")
        return info.as_dict()

    @app.delete("/v1/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> dict:
        try:
            info = registry.delete(voice_id)
        except UnknownVoice as e:
            raise ApiError(404, str(e), param="voice_id", code="voice_not_found") from None
        except PocketError as e:
            raise ApiError(400, str(e), param="voice_id", code="not_deletable") from None
        return {"id": info.id, "object": "voice", "deleted": True}

    # CORS, when on, is outermost: it answers preflights, which carry no key, before the key is checked.
    app.add_middleware(_Front, api_key=api_key, metrics=metrics, upload_bytes=max_upload_bytes)
    if cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Request-Id"],
        )
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 400: "invalid_body"}
        message = e.detail if isinstance(e.detail, str) else "bad request"
        if e.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path[:200]}"
        return error_response(
            ApiError(e.status_code, message, code=codes.get(e.status_code), headers=e.headers), request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        param = where[0] if where else None
        if first.get("type") == "json_invalid":
            failure = ApiError(400, "the body is not valid JSON", code="invalid_json")
        else:
            kind = first.get("type", "invalid")
            message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid')}"
            failure = ApiError(422, message, param=param, code="missing" if kind == "missing" else "invalid_type")
        return error_response(failure, request.url.path)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, e: Overloaded) -> JSONResponse:
        status, code = (503, "queue_timeout") if e.timed_out else (429, "server_busy")
        return error_response(
            ApiError(
                status,
                str(e),
                code=code,
                kind="server_busy_error",
                headers={"Retry-After": str(int(max(1, round(e.retry_after))))},
            ),
            request.url.path,
        )

    @app.exception_handler(PocketError)
    async def pocket_error(request: Request, e: PocketError) -> JSONResponse:
        return error_response(ApiError(400, str(e), code="invalid_value"), request.url.path)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, e: Exception) -> JSONResponse:
        if not isinstance(e, _Aborted):  # _Aborted: after the response started, already accounted for
            logger.error("request %s failed", _record(request).id, exc_info=e)
        return error_response(ApiError(500, "internal server error", kind="server_error"), request.url.path)


def _checked_text(text: str, param: str, max_chars: int) -> str:
    if not text.strip():
        raise ApiError(400, f"{param} is empty", param=param, code="empty_input")
    if len(text) > max_chars:
        raise ApiError(
            400, f"{param} holds {len(text)} characters; at most {max_chars}", param=param, code="input_too_long"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON escapes can carry
        raise ApiError(400, f"{param} is not valid Unicode text", param=param, code="invalid_value") from None
    return text


async def _voice_state(registry: VoiceRegistry, voice: str | None, param: str) -> tuple[VoiceState, str]:
    voice = voice if voice is not None else registry.default_voice
    if voice is None:
        raise ApiError(400, "this model stores no voices: name a registered voice", param=param, code="voice_required")
    try:
        return await registry.state(voice), voice
    except UnknownVoice as e:
        raise ApiError(400, str(e), param=param, code="voice_not_found") from None
    except PocketError as e:
        raise ApiError(400, str(e), param=param, code="invalid_value") from None


async def _refusing(work, param: str):
    """Await `work`, answering a `PocketError` (bad audio, no encoder) as a 400 about `param`."""
    try:
        return await work
    except Overloaded:
        raise
    except PocketError as e:
        raise ApiError(400, str(e), param=param, code="invalid_audio") from None


async def _read_upload(upload: UploadFile, limit: int, param: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"{param} is larger than {limit // 2**20} MB", param=param, code="file_too_large")
    if not data:
        raise ApiError(400, f"{param} is empty", param=param, code="invalid_audio")
    return data


# ---------------------------------------------------------------------- streaming
async def _unless_client_leaves(request: Request, start) -> AsyncIterator[bytes]:
    """Await `start` (a queued wait for an instance, then the first frame), given up when the client hangs
    up meanwhile: a request nobody waits for any more must not take an instance."""
    task = asyncio.ensure_future(start)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            break
    task.cancel()
    try:
        body = await task
    except asyncio.CancelledError:
        pass
    else:  # it had started just then
        await body.aclose()
    _record(request).outcome = "disconnected"
    raise ApiError(499, "the client closed the request", code="client_closed_request")


class _Aborted(Exception):
    """A stream ended early on the server's side (time limit, generation failure): the connection is closed
    without the final chunk, so that the client sees an incomplete response, not a short one."""


class _AudioStream(StreamingResponse):
    """Closes its body however the response ends (time limit, client gone, error): the generation behind it
    stops and its instance is freed at once, not whenever the garbage collector reaches the body."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class _Speaker:
    def __init__(self, pool: ModelPool, request_timeout: float, queue_timeout: float):
        self.pool = pool
        self.request_timeout = request_timeout
        self.queue_timeout = queue_timeout

    async def start(
        self, record: RequestRecord, state: VoiceState, text: str, seed: int | None, fmt: str
    ) -> AsyncIterator[bytes]:
        """The response body, already started: an instance is held and the first frame decoded, so that
        overload and bad input raise here, before any status is sent."""
        body = self._generate(record, state, text, seed, fmt)
        try:
            first = await body.__anext__()
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await body.aclose()
            raise
        return _chained(first, body)

    async def _generate(
        self, record: RequestRecord, state: VoiceState, text: str, seed: int | None, fmt: str
    ) -> AsyncIterator[bytes]:
        deadline = record.deadline = time.monotonic() + self.request_timeout
        encoder = Encoder(fmt, self.pool.sample_rate)
        finished = False
        try:
            async with self.pool.instance(timeout=min(self.queue_timeout, self.request_timeout)) as model:
                chunks = self.pool.stream(model, state, text, seed=seed)
                try:
                    async for chunk in chunks:
                        record.audio_seconds += chunk.size / self.pool.sample_rate
                        record.frames += 1
                        yield encoder.encode(chunk)
                        if time.monotonic() > deadline:
                            record.outcome = "timeout"
                            raise _Aborted(f"over the {self.request_timeout:g} s time limit")
                finally:
                    await chunks.aclose()
            finished = True
            yield encoder.finish()
        except (asyncio.CancelledError, GeneratorExit):
            record.outcome = record.outcome or "disconnected"
            raise
        except _Aborted:
            raise
        except PocketError:
            if record.first_byte is not None or record.audio_seconds:
                record.outcome = "aborted"
                raise _Aborted("the generation failed") from None
            raise
        finally:
            if not finished:
                encoder.close()


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for piece in rest:
            if piece:
                yield piece
    finally:
        await rest.aclose()


async def _sse(pieces: AsyncIterator[bytes], record: RequestRecord) -> AsyncIterator[str]:
    """OpenAI's speech stream events: `speech.audio.delta` with base64 audio, then `speech.audio.done`."""
    try:
        async for piece in pieces:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")})
    except _Aborted as e:
        yield _event({"type": "error", "error": error_body(str(e), "server_error", None, record.outcome)["error"]})
        return
    finally:
        await pieces.aclose()
    usage = {
        "input_characters": record.chars,
        "output_frames": record.frames,
        "audio_seconds": round(record.audio_seconds, 3),
    }
    yield _event({"type": "speech.audio.done", "usage": usage})


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
