"""The model format: configs, tensor names and layouts, ggml type numbers, GGUF keys.

The ground floor: everything may import it and it imports nothing of ours but `errors`.
"""
