"""What a pocket-serve loads and how it answers, apart from the server so that reading it costs no imports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeOptions:
    """What a server loads and how it answers (pocket-serve's options, one field each)."""

    model: str | None = None  # a GGUF, a released checkpoint or model name; None: the embedded synthetic model
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None  # model instances; None: one per two usable CPUs
    queue: int = 16  # requests waiting for an instance before more are refused
    threads: int = 1  # ggml threads of each instance's FlowLM and of its Mimi decoder
    voices_dir: Path | None = None  # None: the user data dir
    api_key: str | None = None
    cors: tuple[str, ...] = ()  # origins whose pages may call the API
    request_timeout: float = 600
    queue_timeout: float = 30
    max_input_chars: int = 4096
    wyoming_uri: str | None = None  # tcp://HOST:PORT or unix://PATH; None: no Wyoming service
    wyoming_voice: str | None = None
    zeroconf: bool = False
    zeroconf_name: str | None = None
    seed: int | None = None  # of requests that give none; None: a fresh one each time
    http: bool = True
    log_level: str = "info"
