"""The labelled-position loss equals Hugging Face's causal-LM loss (and its gradients) at tau = 1."""

import pytest
import torch
import torch.nn.functional as F

from letter_fast.genrec.lcrec.collate import TrainCollator
from letter_fast.genrec.lcrec.examples import build_examples
from letter_fast.genrec.lcrec.loss import labelled_logits, lcrec_loss
from letter_fast.genrec.lcrec.model import LCRecModelConfig, prepare_model
from letter_fast.genrec.lcrec.testing import tiny_causal_lm, tiny_codes, tiny_dataset, tiny_tokenizer
from letter_fast.genrec.lcrec.tokens import add_code_tokens


def _setup(family, tied=True, scope="response"):
    tok = tiny_tokenizer()
    model = tiny_causal_lm(family, len(tok), tie_word_embeddings=tied, seed=1)
    data = tiny_dataset()
    codes = tiny_codes(data.num_items)
    ct = add_code_tokens(tok, model, codes=codes, num_codes=8)
    ex = build_examples(data, codes, "train", ["seqrec", "index2item"], seed=0)
    batch = TrainCollator(tok, loss_scope=scope)(ex[:6])
    return model, ct, batch


@pytest.mark.parametrize("family,tied,scope", [("llama", True, "response"), ("qwen2", False, "response"),
                                                ("llama", False, "sequence"), ("qwen2", True, "letter")])
def test_equals_hf_loss_and_gradients(family, tied, scope):
    model, _, batch = _setup(family, tied, scope)
    model.train()
    ours = lcrec_loss(model, **batch)
    grads = torch.autograd.grad(ours, list(model.parameters()))
    ref = model(**batch, use_cache=False).loss
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_temperature_scales_logits():
    model, _, batch = _setup("llama")
    logits, targets = labelled_logits(model, **batch)
    assert logits.shape[0] == targets.numel() == int((batch["labels"][:, 1:] != -100).sum())
    expected = F.cross_entropy(logits.float() / 0.5, targets)
    torch.testing.assert_close(lcrec_loss(model, **batch, tau=0.5), expected)
    total = lcrec_loss(model, **batch, num_items_in_batch=100)
    torch.testing.assert_close(total, F.cross_entropy(logits.float(), targets, reduction="sum") / 100)
    with pytest.raises(ValueError, match="tau"):
        lcrec_loss(model, **batch, tau=0)


@pytest.mark.parametrize("embeddings", ["new_rows", "full"])
def test_through_peft(embeddings):
    model, ct, batch = _setup("llama")
    peft_model = prepare_model(model, ct, LCRecModelConfig(embeddings=embeddings))
    # LoRA B starts at zero: perturb it so the adapters matter
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    torch.manual_seed(0)  # the same LoRA dropout masks in both passes
    ours = lcrec_loss(peft_model, **batch)
    g = torch.autograd.grad(ours, trainable)
    torch.manual_seed(0)
    ref = peft_model(**batch, use_cache=False).loss
    r = torch.autograd.grad(ref, trainable)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
