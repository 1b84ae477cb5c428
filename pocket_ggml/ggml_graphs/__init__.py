"""GGML graph builders mirroring pocket-tts modules.

They import ggml through `pocket_ggml.ggml_binding`, which sets up the process before ggml loads.
"""
