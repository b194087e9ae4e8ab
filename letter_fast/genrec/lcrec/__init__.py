"""LC-Rec (Zheng et al., 2024): a decoder-only LLM whose vocabulary holds item code tokens."""
