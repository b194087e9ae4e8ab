"""InBatchContrastiveLoss and CodebookDiversityLoss against plain PyTorch cross-entropy."""

import pytest
import torch
import torch.nn.functional as F

from letter_fast.nn import CodebookDiversityLoss, InBatchContrastiveLoss
from tests.conftest import CPU_BACKENDS
from tests.tolerances import assert_close


def reference_diversity(codebooks, codes, positives, temperature=1.0, normalize=False):
    """mean over levels of CE(e_{c_i} @ C^T / tau with c_i masked out, p_i)."""
    losses = []
    for level in range(codebooks.shape[0]):
        cb = F.normalize(codebooks[level], dim=1) if normalize else codebooks[level]
        logits = cb[codes[:, level]] @ cb.T / temperature
        logits = logits.masked_fill(F.one_hot(codes[:, level], cb.shape[0]).bool(), float("-inf"))
        losses.append(F.cross_entropy(logits, positives[:, level]))
    return torch.stack(losses).mean()


def other_codes(codes, N, g):
    shift = torch.randint(1, N, codes.shape, generator=g)
    return (codes + shift) % N  # never the code itself


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("temperature,normalize", [(1.0, False), (0.2, True)])
def test_in_batch_contrastive_loss_matches_cross_entropy(backend, temperature, normalize):
    g = torch.Generator().manual_seed(0)
    z, h = torch.randn(24, 8, generator=g, requires_grad=True), torch.randn(24, 8, generator=g, requires_grad=True)
    loss_fn = InBatchContrastiveLoss(temperature=temperature, normalize=normalize, backend=backend)
    got = loss_fn(z, h)
    zz, hh = (F.normalize(z, dim=1), F.normalize(h, dim=1)) if normalize else (z, h)
    want = F.cross_entropy(zz @ hh.T / temperature, torch.arange(24))
    assert_close(got, want, what="loss")
    gz, gh = torch.autograd.grad(got, (z, h))
    wz, wh = torch.autograd.grad(want, (z, h))
    assert_close(gz, wz, what="grad z_hat")
    assert_close(gh, wh, what="grad cf")
    per_row = InBatchContrastiveLoss(reduction="none", backend=backend)(z, h)
    assert per_row.shape == (24,)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("batch", [5, 40])  # 5 < N: the per-item kernel; 40 >= N: the Gram form
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_codebook_diversity_loss_matches_cross_entropy(backend, batch, temperature):
    L, N, d = 3, 12, 6
    g = torch.Generator().manual_seed(1)
    codebooks = torch.randn(L, N, d, generator=g, requires_grad=True)
    codes = torch.randint(0, N, (batch, L), generator=g)
    positives = other_codes(codes, N, g)
    got = CodebookDiversityLoss(temperature=temperature, backend=backend)(codebooks, codes, positives)
    want = reference_diversity(codebooks, codes, positives, temperature)
    assert_close(got, want, what="loss")
    (got_grad,) = torch.autograd.grad(got, codebooks)
    (want_grad,) = torch.autograd.grad(want, codebooks)
    assert_close(got_grad, want_grad, what="grad codebooks")


def test_codebook_diversity_loss_normalized_and_single_level():
    g = torch.Generator().manual_seed(2)
    codebook = torch.randn(10, 4, generator=g, requires_grad=True)
    codes = torch.randint(0, 10, (30,), generator=g)
    positives = other_codes(codes, 10, g)
    loss_fn = CodebookDiversityLoss(temperature=0.3, normalize=True)
    got = loss_fn(codebook, codes, positives)
    want = reference_diversity(codebook[None], codes[:, None], positives[:, None], 0.3, normalize=True)
    assert_close(got, want, what="normalized single level")


def test_codebook_diversity_loss_errors():
    cb = torch.randn(2, 8, 4)
    codes = torch.zeros(16, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"codes must have shape \[B, L=2\]"):
        CodebookDiversityLoss()(cb, codes[:, :1], codes[:, :1] + 1)
    with pytest.raises(ValueError, match="same shape"):
        CodebookDiversityLoss()(cb, codes, codes[:3] + 1)
    with pytest.raises(ValueError, match=r"must lie in \[0, 8\)"):
        CodebookDiversityLoss()(cb, codes, codes + 8)
    with pytest.raises(TypeError, match="int64"):
        CodebookDiversityLoss()(cb, codes.int(), (codes + 1).int())
    with pytest.raises(ValueError, match=r"\[L, N, d\] or \[N, d\]"):
        CodebookDiversityLoss()(torch.randn(8), codes, codes + 1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        CodebookDiversityLoss(temperature=0.0)
