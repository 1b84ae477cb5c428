"""pocket-serve: an OpenAI-compatible speech server (and the official pocket-tts server's /tts) over TTSModel.

`create_app(pool, registry)` is the ASGI app; `ModelPool` lends K loaded instances to requests; `VoiceRegistry`
keeps the voices clients register; `serve_wyoming` speaks Home Assistant's Wyoming protocol over the same pool.
`PocketServer` (server.py) runs them together with uvicorn; `pocket-serve` (cli.serve) is its command.
"""
