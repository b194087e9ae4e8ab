"""Tiny random causal LMs and a tokenizer built in code, for tests of LC-Rec (no downloads, deterministic).

:func:`tiny_tokenizer` trains a small byte-level BPE (GPT-2 style: no BOS, EOS = PAD = ``<|endoftext|>``) with
the ``tokenizers`` library on a fixed corpus; :func:`tiny_causal_lm` builds a random Llama or Qwen2 of a few
thousand parameters per layer from a seed.
"""

from __future__ import annotations

from typing import Optional

import torch

EOS_TOKEN = "<|endoftext|>"

_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:", "### Response:", "The user has interacted with the following items in order:",
    "Which item would the user like next? Recommend the next item.", "Here is the purchase history of a user:",
    "Item title: a small digital caliper made of stainless steel. Description: measures to 0.01 mm.",
    "What is the identifier of this item? Give the title of the item with identifier.",
    "Laboratory glass beaker, borosilicate, 250 ml, pack of 12, heat resistant and easy to clean.",
    "A soldering iron kit with temperature control, stand, tips and solder wire for electronics.",
    "Nitrile gloves, powder free, large, box of 100. Safety goggles with anti fog lens.",
]


def tiny_tokenizer(vocab_size: int = 400, corpus: Optional[list] = None):
    """A ``PreTrainedTokenizerFast`` with byte-level BPE trained on a fixed corpus; no BOS, eos = pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus or _CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    fast.padding_side = "right"
    return fast


def tiny_causal_lm(family: str = "llama", vocab_size: int = 400, *, hidden_size: int = 32, num_layers: int = 2,
                   num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 64,
                   tie_word_embeddings: bool = True,
                   eos_token_id: int = 0, seed: int = 0, attn_implementation: str = "sdpa"):
    """A random ``LlamaForCausalLM`` or ``Qwen2ForCausalLM`` (fp32, eval mode) built from ``seed``."""
    if family == "llama":
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model
    elif family == "qwen2":
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model
    else:
        raise ValueError(f"family must be 'llama' or 'qwen2', got {family!r}")
    config = Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                    num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                    intermediate_size=intermediate_size, max_position_embeddings=512,
                    tie_word_embeddings=tie_word_embeddings, eos_token_id=eos_token_id, pad_token_id=eos_token_id,
                    bos_token_id=None)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Model(config)
    return model.eval()


def save_tiny_base(folder, family: str = "llama", seed: int = 0, **kwargs):
    """:func:`tiny_causal_lm` and :func:`tiny_tokenizer` saved as a local causal-LM folder (what ``--model PATH``
    and ``load_causal_lm`` read); returns the folder."""
    from pathlib import Path

    tok = tiny_tokenizer()
    model = tiny_causal_lm(family, len(tok), seed=seed, **kwargs)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def tiny_codes(num_items: int = 12, num_levels: int = 3, num_codes: int = 8, seed: int = 0) -> torch.Tensor:
    """``[V, L]`` distinct random item codes."""
    g = torch.Generator().manual_seed(seed)
    seen, rows = set(), []
    while len(rows) < num_items:
        row = tuple(torch.randint(num_codes, (num_levels,), generator=g).tolist())
        if row not in seen:
            seen.add(row)
            rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def tiny_dataset(num_users: int = 6, num_items: int = 12, with_text: bool = True, seed: int = 0):
    """A small ``letter_fast.data.Dataset`` with histories of 2..8 items and (optionally) item text."""
    from letter_fast.data import Dataset

    g = torch.Generator().manual_seed(seed)
    histories = []
    for _ in range(num_users):
        n = int(torch.randint(2, 9, (1,), generator=g))
        histories.append(torch.randint(num_items, (n,), generator=g).tolist())
    items = None
    if with_text:
        items = [{"title": f"Item number {i} beaker", "description": f"A glass item {i}, heat resistant.",
                  "brand": "", "categories": ""} for i in range(num_items)]
    return Dataset(name="Tiny", histories=histories, num_items=num_items, items=items)


__all__ = ["tiny_tokenizer", "tiny_causal_lm", "save_tiny_base", "tiny_codes", "tiny_dataset", "EOS_TOKEN"]
