"""A whole pocket-serve: K loaded instances, the voice registry, and the HTTP app and/or the Wyoming service
over them, sharing one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal

from pocket_ggml.serve.app import create_app
from pocket_ggml.serve.options import ServeOptions
from pocket_ggml.serve.pool import ModelPool
from pocket_ggml.serve.registry import VoiceRegistry

logger = logging.getLogger("pocket_ggml.serve")

_UVICORN_SETTINGS = {
    "access_log": False,  # the app logs each request itself, with what the access log lacks (see app._Front)
    "log_config": None,  # logging is the process's, configured once by its command
    "lifespan": "off",  # the pool is loaded before uvicorn starts and closed after it stops
    "timeout_graceful_shutdown": 5,  # seconds streams get to finish on shutdown, then they are cut off
}


class PocketServer:
    """The loaded instances, the registry and the app `options` ask for; `serve()` runs them until stopped,
    `close()` frees the instances."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.pool = ModelPool(
            options.model, options.workers, options.queue, threads=options.threads, mimi_threads=options.threads
        )
        self.registry = VoiceRegistry(self.pool, options.voices_dir)
        self.app = create_app(
            self.pool,
            self.registry,
            api_key=options.api_key,
            cors=list(options.cors) or None,
            request_timeout=options.request_timeout,
            queue_timeout=options.queue_timeout,
            max_input_chars=options.max_input_chars,
            seed=options.seed,
        )
        logger.info(
            "%s: %d instance(s), queue %d, voices in %s%s",
            self.pool.model_name,
            self.pool.workers,
            options.queue,
            self.registry.voices_dir,
            ", bearer key required" if options.api_key else "",
        )

    async def serve(self) -> None:
        """uvicorn and the Wyoming server in one event loop, sharing the pool; when one stops, so does the other.
        uvicorn handles SIGINT/SIGTERM; Wyoming alone stops on them here, closing its connections first."""
        services = []
        if self.options.http:
            services.append(asyncio.create_task(self._http(), name="http"))
        if self.options.wyoming_uri is not None:
            services.append(asyncio.create_task(self._wyoming(), name="wyoming"))
        done, pending = await asyncio.wait(services, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()

    async def _http(self) -> None:
        import uvicorn

        options = self.options
        config = uvicorn.Config(
            self.app, host=options.host, port=options.port, log_level=options.log_level, **_UVICORN_SETTINGS
        )
        await uvicorn.Server(config).serve()

    async def _wyoming(self) -> None:
        from pocket_ggml.serve.wyoming import serve_wyoming

        options = self.options
        stop = asyncio.Event()
        if not options.http:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        service = {"max_chars": options.max_input_chars, "seed": options.seed, "voice": options.wyoming_voice}
        await serve_wyoming(
            options.wyoming_uri,
            self.pool,
            self.registry,
            zeroconf=options.zeroconf,
            zeroconf_name=options.zeroconf_name,
            stop=stop,
            **service,
        )

    def close(self) -> None:
        self.pool.close()
