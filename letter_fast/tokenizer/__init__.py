"""The LETTER item tokenizer: RQ-VAE + collaborative and diversity regularization."""
