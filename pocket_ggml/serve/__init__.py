"""pocket-serve: an OpenAI-compatible speech server (and the official pocket-tts server's /tts) over TTSModel.

`create_app(pool, registry)` is the ASGI app; `ModelPool` lends K loaded instances to requests; `VoiceRegistry`
keeps the voices clients register. `pocket-serve` (serve.cli) runs it with uvicorn.
"""
