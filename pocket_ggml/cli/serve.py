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
from pathlib import Path

import click

from pocket_ggml.cli.common import CONTEXT_SETTINGS, exit_on_pocket_error
from pocket_ggml.serve.options import ServeOptions

_WYOMING_URI = re.compile(r"tcp://\S+:\d{1,5}|unix://\S+")
_ERROR = "pocket-serve: "


# What each option means, by its ServeOptions field; an option without an entry is explained by its name.
_HELP = {
    "model": "A pocket-tts GGUF, a released checkpoint or model name (default: the embedded synthetic model).",
    "host": "Address to listen on (0.0.0.0: every interface; think of --api-key then).",
    "workers": "Model instances generating at once (default: one per two usable CPUs).",
    "queue": "Requests waiting for an instance before more are refused with 429.",
    "threads": "ggml threads of each instance's FlowLM and of its Mimi decoder.",
    "voices_dir": "Where registered voices are kept (default: the user data dir, pocket-ggml/voices).",
    "api_key": "Require 'Authorization: Bearer KEY' on every route but /health (env POCKET_API_KEY).",
    "cors": "Allow browser pages of ORIGIN to call the API (repeatable; default: no cross-origin access).",
    "request_timeout": "Seconds a request may take in all (queue + generation); a longer stream is cut off.",
    "queue_timeout": "Seconds a request may wait for an instance before a 503.",
    "wyoming_uri": "Also serve the Wyoming protocol (Home Assistant) at tcp://HOST:PORT.",
    "wyoming_voice": "The Wyoming side's default voice (a stored voice or registered id; default: the model's first).",
    "zeroconf": "Announce the Wyoming service on the local network (zeroconf).",
    "zeroconf_name": "The announced name (default: pocket-ggml-<hostname>).",
    "seed": "Seed of every request that gives none (HTTP `seed` field; Wyoming). Default: a fresh one each time.",
    "http": "Serve HTTP (--no-http: Wyoming only).",
}


def _option(*decls: str, **attrs):
    """A click option of the `ServeOptions` field of its name, with that field's default (shown in the help
    when it is a value: not None, not an unset flag) and its `_HELP`."""
    name = click.Option(decls).name
    default = getattr(ServeOptions, name)
    return click.option(
        *decls, default=default, show_default=default not in (None, False), help=_HELP.get(name), **attrs
    )


@click.command(context_settings={**CONTEXT_SETTINGS, "max_content_width": 100})
@_option("--model")
@_option("--host")
@_option("--port", type=click.IntRange(1, 65535))
@_option("--workers", type=click.IntRange(1, 64))
@_option("--queue", type=click.IntRange(0, 10_000))
@_option("--threads", type=click.IntRange(1, 64))
@_option("--voices-dir", type=click.Path(file_okay=False, path_type=Path))
@_option("--api-key", envvar="POCKET_API_KEY")
@_option("--cors", multiple=True, metavar="ORIGIN")
@_option("--request-timeout", type=click.FloatRange(1, 86400))
@_option("--queue-timeout", type=click.FloatRange(0.1, 86400))
@_option("--max-input-chars", type=click.IntRange(1, 1_000_000))
@_option("--wyoming", "wyoming_uri", metavar="URI")
@_option("--wyoming-voice", metavar="VOICE")
@_option("--zeroconf", is_flag=True)
@_option("--zeroconf-name")
@_option("--seed", type=click.IntRange(0, 2**63 - 1))
@_option("--http/--no-http")
@_option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def main(**params) -> None:
    """Serve Pocket TTS: OpenAI's POST /v1/audio/speech, the official server's POST /tts, a voice registry
    (/v1/audio/voices), /v1/models, /health, /metrics and a web page at /."""
    from pocket_ggml.serve.server import PocketServer

    options = ServeOptions(**params)
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not options.http and not options.wyoming_uri:
        raise click.UsageError("--no-http needs --wyoming URI: there would be nothing to serve")
    if options.wyoming_uri is not None and not _WYOMING_URI.fullmatch(options.wyoming_uri):
        raise click.BadParameter(
            f"{options.wyoming_uri!r} is not tcp://HOST:PORT (or unix://PATH)", param_hint="--wyoming"
        )
    with exit_on_pocket_error(_ERROR):
        server = PocketServer(options)
    try:
        with exit_on_pocket_error(_ERROR):  # the Wyoming side refusing its URI or voice
            asyncio.run(server.serve())
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
