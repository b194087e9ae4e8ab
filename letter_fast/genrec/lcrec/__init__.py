"""LC-Rec (Zheng et al., ICDE 2024) on LETTER identifiers: a causal LLM whose vocabulary holds the code tokens.

Parts (each its own module; names resolve lazily, so importing this package imports neither transformers nor
peft):

* :mod:`~letter_fast.genrec.lcrec.tokens`    code tokens in the tokenizer (``add_code_tokens``, ``CodeTokens``)
* :mod:`~letter_fast.genrec.lcrec.templates` the Alpaca frame and the task templates (``templates.json``)
* :mod:`~letter_fast.genrec.lcrec.examples`  instruction examples from a data set (``build_examples``)
* :mod:`~letter_fast.genrec.lcrec.collate`   tokenization, padding and labels (``TrainCollator``, ``PromptCollator``)
* :mod:`~letter_fast.genrec.lcrec.loss`      the loss with the LM head only at labelled positions (``lcrec_loss``)
* :mod:`~letter_fast.genrec.lcrec.model`     loading, LoRA / embeddings setup, save / load (``LCRecModelConfig``)
* :mod:`~letter_fast.genrec.lcrec.decoder`   constrained beam search over the identifier trie (``LCRecDecoder``)
* :mod:`~letter_fast.genrec.lcrec.train`     the trainer on ``letter_fast.training.fit`` (``train_lcrec``)
* :mod:`~letter_fast.genrec.lcrec.evaluate`  Recall / NDCG@5/10 per prompt template (``evaluate_lcrec``)
* :mod:`~letter_fast.genrec.lcrec.testing`   tiny random models and a tokenizer built in code, for tests
"""

from __future__ import annotations

import importlib

_NAMES = {
    "tokens": ("CodeTokens", "CodeTokenError", "add_code_tokens", "resize_embeddings", "check_single_tokens",
               "item_string", "item_strings"),
    "templates": ("PROMPT_FRAME", "TASKS", "TEXT_TASKS", "expand_tasks", "load_templates", "frame"),
    "examples": ("LCRecExamples", "build_examples"),
    "collate": ("IGNORE_INDEX", "LOSS_SCOPES", "TokenizedExamples", "tokenize_examples", "collate_train",
                "collate_prompts", "TrainCollator", "PromptCollator"),
    "loss": ("lcrec_loss", "labelled_logits", "decoder_body"),
    "model": ("LCRecModelConfig", "load_causal_lm", "prepare_model", "save_model", "load_model",
              "trainable_parameters", "smollm2_gguf", "smollm2_folder"),
    "decoder": ("LCRecDecoder", "check_left_padded", "left_pad", "dict_trie_prefix_fn", "hf_generate_recommend",
                "tokens_to_identifiers", "generate_text"),
    "train": ("LCRecTrainConfig", "LCRecRun", "train_lcrec", "train_and_evaluate_lcrec", "build_lcrec_model",
              "load_lcrec"),
    "evaluate": ("evaluate_lcrec", "write_lcrec_results"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'letter_fast.genrec.lcrec' has no attribute {name!r}")
    return getattr(importlib.import_module(f"letter_fast.genrec.lcrec.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
