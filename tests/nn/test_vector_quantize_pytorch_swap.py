"""A small RQ-VAE written against vector-quantize-pytorch's ``ResidualVQ`` trains as well with
``letter_fast.nn.ResidualQuantizer`` swapped in for it: same model code, same training loop, one name changed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from letter_fast.nn import ResidualQuantizer

vqp = pytest.importorskip("vector_quantize_pytorch")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the same numbers on every machine, and no thread-pool overhead at these tiny sizes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RQVAE(nn.Module):
    """An RQ-VAE as a vector-quantize-pytorch user writes it: ``(quantized, indices, commit_loss) = rvq(z)``."""

    def __init__(self, quantizer_cls, dim_in=32, latent=8, **rvq_kwargs):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim_in, 64), nn.ReLU(), nn.Linear(64, latent))
        self.rvq = quantizer_cls(dim=latent, num_quantizers=3, codebook_size=32, kmeans_init=True, **rvq_kwargs)
        self.decoder = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, dim_in))

    def forward(self, x):
        quantized, indices, commit_loss = self.rvq(self.encoder(x))
        return self.decoder(quantized), indices, commit_loss


def data(n=2048, dim=32, seed=0):
    """Items on a few low-dimensional clusters (what an RQ-VAE compresses well)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(16, dim, generator=g)
    basis = torch.randn(16, 4, dim, generator=g) * 0.3
    labels = torch.randint(0, 16, (n,), generator=g)
    return centers[labels] + torch.einsum("nk,nkd->nd", torch.randn(n, 4, generator=g), basis[labels])


def train(quantizer_cls, steps=150, **rvq_kwargs):
    torch.manual_seed(0)
    model = RQVAE(quantizer_cls, **rvq_kwargs)
    x, test = data(2048 + 512).split([2048, 512])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(2)
    model.train()
    for step in range(steps):
        batch = x[torch.randint(0, x.shape[0], (256,), generator=g)]
        recon, indices, commit_loss = model(batch)
        loss = F.mse_loss(recon, batch) + commit_loss.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            first = F.mse_loss(recon, batch).item()
    model.eval()
    with torch.no_grad():
        recon, indices, _ = model(test)
    assert indices.shape == (512, 3)
    return first, F.mse_loss(recon, test).item(), indices


@pytest.mark.parametrize("rvq_kwargs", [
    dict(),                                                  # EMA codebooks (both libraries' default)
    dict(decay=0.9, threshold_ema_dead_code=2),              # EMA + dead-code reset
    dict(ema_update=False, learnable_codebook=True),         # codebooks trained by gradient
], ids=["ema", "ema+dead-codes", "learnable"])
def test_rqvae_trains_comparably_with_ours_swapped_in(rvq_kwargs):
    theirs_first, theirs_final, _ = train(vqp.ResidualVQ, **rvq_kwargs)
    ours_first, ours_final, ours_codes = train(ResidualQuantizer, **rvq_kwargs)
    assert ours_final < 0.5 * ours_first, (ours_first, ours_final)       # ours learns
    assert theirs_final < 0.5 * theirs_first, (theirs_first, theirs_final)
    assert ours_final < 1.25 * theirs_final, (ours_final, theirs_final)  # and about as well (or better)
    assert len(torch.unique(ours_codes[:, 0])) > 8                      # the first level is not collapsed
