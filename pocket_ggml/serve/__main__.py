from pocket_ggml.serve.cli import main

main()
