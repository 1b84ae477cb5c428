"""pocket-serve: load K instances of a model and serve them over HTTP (and/or Wyoming).

pocket-serve                                   # the embedded model on http://127.0.0.1:8000
pocket-serve --model english.gguf --workers 2 --api-key KEY --voices-dir ~/voices
pocket-serve --wyoming tcp://0.0.0.0:10200     # Home Assistant's Wyoming protocol beside HTTP
pocket-serve --no-http --wyoming tcp://0.0.0.0:10200
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from pathlib import Path

import click

from pocket_ggml.errors import PocketError

_WYOMING_URI = re.compile(r"tcp://\S+:\d{1,5}|unix://\S+")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--model",
    "model",
    default=None,
    help="A pocket-tts GGUF, a released checkpoint or model name (default: the embedded synthetic model).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface; think of --api-key then).",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Model instances generating at once (default: one per two usable CPUs).",
)
@click.option(
    "--queue",
    type=click.IntRange(0, 10_000),
    default=16,
    show_default=True,
    help="Requests waiting for an instance before more are refused with 429.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="ggml threads of each instance's FlowLM and of its Mimi decoder.",
)
@click.option(
    "--voices-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where registered voices are kept (default: the user data dir, pocket-ggml/voices).",
)
@click.option(
    "--api-key",
    envvar="POCKET_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on every route but /health (env POCKET_API_KEY).",
)
@click.option(
    "--cors",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser pages of ORIGIN to call the API (repeatable; default: no cross-origin access).",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(1, 86400),
    default=600,
    show_default=True,
    help="Seconds a request may take in all (queue + generation); a longer stream is cut off.",
)
@click.option(
    "--queue-timeout",
    type=click.FloatRange(0.1, 86400),
    default=30,
    show_default=True,
    help="Seconds a request may wait for an instance before a 503.",
)
@click.option("--max-input-chars", type=click.IntRange(1, 1_000_000), default=4096, show_default=True)
@click.option(
    "--wyoming",
    "wyoming_uri",
    default=None,
    metavar="URI",
    help="Also serve the Wyoming protocol (Home Assistant) at tcp://HOST:PORT.",
)
@click.option(
    "--wyoming-voice",
    default=None,
    metavar="VOICE",
    help="The Wyoming side's default voice (a stored voice or registered id; default: the model's first).",
)
@click.option("--zeroconf", is_flag=True, help="Announce the Wyoming service on the local network (zeroconf).")
@click.option("--zeroconf-name", default=None, help="The announced name (default: pocket-ggml-<hostname>).")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**63 - 1),
    default=None,
    help="Seed of every request that gives none (HTTP `seed` field; Wyoming). Default: a fresh one each time.",
)
@click.option("--http/--no-http", default=True, show_default=True, help="Serve HTTP (--no-http: Wyoming only).")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
def main(
    model,
    host,
    port,
    workers,
    queue,
    threads,
    voices_dir,
    api_key,
    cors,
    request_timeout,
    queue_timeout,
    max_input_chars,
    wyoming_uri,
    wyoming_voice,
    zeroconf,
    zeroconf_name,
    seed,
    http,
    log_level,
) -> None:
    """Serve Pocket TTS: OpenAI's POST /v1/audio/speech, the official server's POST /tts, a voice registry
    (/v1/audio/voices), /v1/models, /health, /metrics and a web page at /."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not http and not wyoming_uri:
        raise click.UsageError("--no-http needs --wyoming URI: there would be nothing to serve")
    if wyoming_uri is not None and not _WYOMING_URI.fullmatch(wyoming_uri):
        raise click.BadParameter(f"{wyoming_uri!r} is not tcp://HOST:PORT (or unix://PATH)", param_hint="--wyoming")
    try:
        from pocket_ggml.serve.app import create_app
        from pocket_ggml.serve.pool import ModelPool
        from pocket_ggml.serve.registry import VoiceRegistry

        pool = ModelPool(model, workers, queue, threads=threads, mimi_threads=threads)
        registry = VoiceRegistry(pool, voices_dir)
        app = create_app(
            pool,
            registry,
            api_key=api_key,
            cors=list(cors) or None,
            request_timeout=request_timeout,
            queue_timeout=queue_timeout,
            max_input_chars=max_input_chars,
            seed=seed,
        )
    except PocketError as e:
        click.echo(f"pocket-serve: {e}", err=True)
        sys.exit(2)
    logging.getLogger("pocket_ggml.serve").info(
        "%s: %d instance(s), queue %d, voices in %s%s",
        pool.model_name,
        pool.workers,
        queue,
        registry.voices_dir,
        ", bearer key required" if api_key else "",
    )
    wyoming = None
    if wyoming_uri:
        wyoming = {
            "uri": wyoming_uri,
            "zeroconf": zeroconf,
            "zeroconf_name": zeroconf_name,
            "max_chars": max_input_chars,
            "seed": seed,
            "voice": wyoming_voice,
        }
    try:
        asyncio.run(_serve(app, pool, registry, host, port, wyoming, http, log_level))
    except KeyboardInterrupt:
        pass
    except PocketError as e:  # the Wyoming side refusing its URI or voice
        click.echo(f"pocket-serve: {e}", err=True)
        sys.exit(2)
    finally:
        pool.close()


async def _serve(app, pool, registry, host: str, port: int, wyoming: dict | None, http: bool, log_level: str):
    """uvicorn and the Wyoming server in one event loop, sharing the pool; when one stops, so does the other.
    uvicorn handles SIGINT/SIGTERM; Wyoming alone stops on them here, closing its connections first."""
    services = []
    if http:
        import uvicorn

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=False,
            log_config=None,
            log_level=log_level,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        services.append(asyncio.create_task(uvicorn.Server(config).serve(), name="http"))
    if wyoming is not None:
        from pocket_ggml.serve.wyoming import serve_wyoming

        stop = asyncio.Event()
        if not http:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        uri = wyoming.pop("uri")
        services.append(asyncio.create_task(serve_wyoming(uri, pool, registry, stop=stop, **wyoming), name="wyoming"))
    done, pending = await asyncio.wait(services, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


if __name__ == "__main__":
    main()
