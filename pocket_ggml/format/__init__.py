"""The model format: configs (`config`, `released_configs`), tensor names and layouts (`names`, with
the SEANet module walk in `seanet`), ggml type numbers, sizes and the numpy type map (`ggml_types`),
the GGUF metadata keys and the names of the tensors beyond the weights (`gguf_keys`), and the
embedded tokenizer (`tokenizer`).

The ground floor: everything may import it and it imports nothing of ours but `errors`.
"""
