"""ResidualQuantizer against a plain PyTorch reference: outputs, straight-through gradients, losses, EMA
updates, dead-code resets, k-means initialization and errors."""

import pytest
import torch
import torch.nn.functional as F

from letter_fast.nn import ResidualQuantizer, kmeans
from tests.conftest import CPU_BACKENDS
from tests.tolerances import assert_close

L, N, D = 3, 16, 8


def reference_rq(x, codebooks, commitment_weight, learnable):
    """The textbook RQ-VAE step, level by level: nearest code by explicit distances, residual chain on
    sg(e), per-level codebook + commitment losses, straight-through output."""
    z = x.reshape(-1, x.shape[-1])
    r = z
    codes, losses, z_hat = [], [], torch.zeros_like(z)
    for level in range(codebooks.shape[0]):
        cb = codebooks[level]
        dist = ((r.detach()[:, None, :] - cb.detach()[None]) ** 2).sum(-1)
        c = dist.argmin(1)
        e = cb[c]
        loss = commitment_weight * ((r - e.detach()) ** 2).mean()
        if learnable:
            loss = loss + ((e - r.detach()) ** 2).mean()
        losses.append(loss)
        codes.append(c)
        z_hat = z_hat + e
        r = r - e.detach()
    quantized = z + (z_hat - z).detach()
    return quantized.view(x.shape), torch.stack(codes, 1).view(*x.shape[:-1], -1), torch.stack(losses), z_hat


def make(**kw):
    torch.manual_seed(0)
    return ResidualQuantizer(dim=D, num_quantizers=L, codebook_size=N, **kw)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(64, D), (4, 9, D)])
@pytest.mark.parametrize("learnable", [True, False])
def test_outputs_and_gradients_match_reference(backend, shape, learnable):
    rq = make(ema_update=not learnable, commitment_weight=0.25, backend=backend)
    ref_cb = rq.codebooks.detach().clone().requires_grad_(learnable)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    rq.eval()  # no EMA update: the codebooks stay those of the reference
    quantized, codes, losses, all_codes = rq(x1, return_all_codes=True)
    want_q, want_codes, want_losses, want_zhat = reference_rq(x2, ref_cb, 0.25, learnable)
    assert codes.shape == (*shape[:-1], L) and codes.dtype == torch.int64
    assert torch.equal(codes, want_codes)
    assert_close(quantized, want_q, what="quantized")
    assert_close(losses, want_losses, what="losses")
    assert all_codes.shape == (L, *shape[:-1], D)
    assert_close(all_codes.sum(0).reshape(-1, D), want_zhat, what="sum of all codes")
    assert_close(rq.get_output_from_indices(codes), want_zhat.view(shape), what="get_output_from_indices")
    # a downstream loss on quantized + the quantizer's loss, through both implementations
    target = torch.randn(shape, generator=g)
    ((quantized - target) ** 2).sum().add(losses.sum()).backward()
    ((want_q - target) ** 2).sum().add(want_losses.sum()).backward()
    assert_close(x1.grad, x2.grad, what="grad x")
    if learnable:
        assert_close(rq.codebooks.grad, ref_cb.grad, what="grad codebooks")
    else:
        assert not rq.codebooks.requires_grad and rq.codebooks.grad is None


def test_straight_through_gradient_is_identity():
    rq = make(ema_update=False).eval()
    x = torch.randn(32, D, generator=torch.Generator().manual_seed(2), requires_grad=True)
    quantized, codes, _ = rq(x)
    w = torch.randn(32, D, generator=torch.Generator().manual_seed(3))
    (quantized * w).sum().backward()
    assert torch.equal(x.grad, w)  # d quantized / d x = I
    assert_close(quantized.detach(), rq.get_output_from_indices(codes), what="value is z_hat")


def test_loss_breakdown_mean_is_the_level_mean():
    rq = make(ema_update=False, commitment_weight=0.3).eval()
    x = torch.randn(50, D, generator=torch.Generator().manual_seed(4))
    _, _, losses, parts = rq(x, return_loss_breakdown=True)
    assert_close(parts.mean, losses.mean(), what="mean")
    assert_close(losses, parts.codebook + 0.3 * parts.commitment, what="weighted sum")
    # learnable codebooks: the codebook term equals the commitment term in value (both mse(e, r))
    assert_close(parts.codebook, parts.commitment, what="codebook vs commitment value")


def test_explicit_codes_are_used():
    rq = make(ema_update=False).eval()
    x = torch.randn(10, D, generator=torch.Generator().manual_seed(5))
    codes = torch.randint(0, N, (10, L), generator=torch.Generator().manual_seed(6))
    quantized, got, _ = rq(x, codes=codes)
    assert torch.equal(got, codes)
    assert_close(quantized, rq.get_output_from_indices(codes), what="quantized with given codes")


def test_ema_update_matches_formula():
    decay, eps = 0.7, 1e-5
    rq = make(decay=decay, eps=eps).train()
    before = rq.codebooks.detach().clone()
    x = torch.randn(40, D, generator=torch.Generator().manual_seed(7))
    quantized, codes, losses = rq(x)
    # outputs use the codebooks as they were before the update
    _, want_codes, want_losses, want_zhat = reference_rq(x, before, 1.0, learnable=False)
    assert torch.equal(codes, want_codes)
    assert_close(quantized, want_zhat, what="quantized before update")
    assert_close(losses, want_losses, what="commitment losses")
    # hand-computed EMA of counts and sums from initial counts 1 and sums = codes
    r = x.clone()
    for level in range(L):
        onehot = F.one_hot(codes[:, level], N).float()
        n = decay * 1.0 + (1 - decay) * onehot.sum(0)
        m = decay * before[level] + (1 - decay) * onehot.T @ r
        smoothed = (n + eps) / (n.sum() + N * eps) * n.sum()
        assert_close(rq.cluster_size[level], n, what=f"cluster_size {level}")
        assert_close(rq.embed_avg[level], m, what=f"embed_avg {level}")
        assert_close(rq.codebooks[level].detach(), m / smoothed[:, None], what=f"codebook {level}")
        r = r - before[level][codes[:, level]]
    # eval mode leaves everything alone
    rq.eval()
    state = {k: v.clone() for k, v in rq.state_dict().items()}
    rq(x)
    assert all(torch.equal(v, rq.state_dict()[k]) for k, v in state.items())


def test_ema_moves_codes_to_cluster_means():
    """Two well-separated blobs, one level, two codes: EMA codes converge to the blob means."""
    g = torch.Generator().manual_seed(8)
    means = torch.tensor([[4.0, 0.0], [-4.0, 0.0]])
    rq = ResidualQuantizer(dim=2, num_quantizers=1, codebook_size=2, decay=0.5)
    with torch.no_grad():
        rq.codebooks.copy_(torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]]))
        rq.embed_avg.copy_(rq.codebooks)
    rq.train()
    for _ in range(30):
        x = means[torch.arange(200) % 2] + 0.1 * torch.randn(200, 2, generator=g)
        rq(x)
    # the EMA tracks the recent batches' means: within a few standard errors (0.1 / sqrt(100)) of the blob means
    err = (rq.codebooks[0].detach() - means).abs().max()
    assert err < 0.05, f"EMA codes {rq.codebooks[0].tolist()} are {err:.3f} from the blob means"


def test_dead_codes_are_reset_to_batch_residuals():
    torch.manual_seed(9)
    rq = ResidualQuantizer(dim=D, num_quantizers=2, codebook_size=N, decay=0.5, threshold_ema_dead_code=1.0)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        rq.codebooks[:, 0] = 100.0  # code 0 of each level is far from every residual: never chosen
        rq.embed_avg.copy_(rq.codebooks)
    before = rq.codebooks.detach().clone()
    rq.train()
    _, codes, _ = rq(x)
    assert not (codes == 0).any()
    residuals = (x, x - before[0][codes[:, 0]])  # each level's input r_{l-1}
    for level in range(2):
        # code 0: EMA count 0.5 * 1 + 0.5 * 0 < 1 -> a residual of this batch at its level, count reset to 1
        new = rq.codebooks[level, 0].detach()
        assert (new[None] - residuals[level]).abs().amax(1).min() < 1e-5, f"level {level}: not a level residual"
        assert rq.cluster_size[level, 0] == 1.0
        assert torch.equal(rq.embed_avg[level, 0], new)
    assert not (rq.cluster_size < 1.0).any()  # every dead code was reset (64 residuals >= dead codes)


def test_dead_code_reset_uses_level_residuals_and_distinct_samples():
    """More dead codes than batch vectors: as many codes as vectors are reset, each to a different one."""
    torch.manual_seed(11)
    rq = ResidualQuantizer(dim=D, num_quantizers=2, codebook_size=N, ema_update=False, learnable_codebook=True,
                           decay=0.0, threshold_ema_dead_code=0.5)
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(12))
    rq.train()
    before = rq.codebooks.detach().clone()
    _, codes, _ = rq(x)
    r1 = x - before[0][codes[:, 0]]
    for level, r in ((0, x), (1, r1)):
        unused = torch.ones(N, dtype=torch.bool)
        unused[codes[:, level]] = False
        changed = (rq.codebooks[level].detach() != before[level]).any(1)
        assert changed.sum() == min(int(unused.sum()), 4) and not changed[~unused].any()
        new = rq.codebooks[level].detach()[changed]
        # [changed, 4]: which batch residual each became (the module forms r_{l-1} = z - sum_{j<l} e_j, which
        # may differ from the chained subtraction here by rounding)
        match = (new[:, None, :] - r[None]).abs().amax(-1) < 1e-6
        assert match.any(1).all() and (match.sum(0) <= 1).all()


def test_kmeans_init_on_first_training_batch_and_explicit():
    x = torch.randn(300, D, generator=torch.Generator().manual_seed(13))
    rq = make(kmeans_init=True, kmeans_iters=7)
    assert not bool(rq.initialized) and not rq.codebooks.detach().any()
    with pytest.raises(RuntimeError, match="not initialized"):
        rq.eval()(x)
    rq.train()(x)
    assert bool(rq.initialized) and rq.codebooks.detach().any(1).all()
    explicit = make(kmeans_init=True, kmeans_iters=7)
    seed = 123
    explicit.init_codebooks(x, seed=seed)
    r = x
    for level in range(L):
        centers, labels = kmeans(r, N, iters=7, seed=seed + level)
        assert torch.equal(explicit.codebooks[level].detach(), centers)
        counts = torch.bincount(labels, minlength=N).float()
        assert torch.equal(explicit.cluster_size[level], counts)
        assert_close(explicit.embed_avg[level], centers * counts[:, None], what="embed_avg")
        r = r - centers[labels]


def test_first_batch_init_equals_explicit_init_then_step():
    x = torch.randn(200, D, generator=torch.Generator().manual_seed(15))
    auto, manual = make(kmeans_init=True), make(kmeans_init=True)
    torch.manual_seed(16)
    out_auto = auto.train()(x)
    torch.manual_seed(16)
    manual.init_codebooks(x)
    out_manual = manual.train()(x)
    for a, b in zip(out_auto, out_manual, strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(v, manual.state_dict()[k]) for k, v in auto.state_dict().items())


def test_state_dict_round_trip():
    rq = make(threshold_ema_dead_code=2.0).train()
    rq(torch.randn(30, D, generator=torch.Generator().manual_seed(17)))
    other = make(threshold_ema_dead_code=2.0)
    other.load_state_dict(rq.state_dict())
    assert set(rq.state_dict()) == {"codebooks", "initialized", "cluster_size", "embed_avg"}
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in rq.state_dict().items())
    assert set(make(ema_update=False).state_dict()) == {"codebooks", "initialized"}


def test_empty_batch():
    rq = make().train()
    quantized, codes, losses = rq(torch.empty(0, D))
    assert quantized.shape == (0, D) and codes.shape == (0, L) and losses.shape == (L,)


def test_errors_name_the_problem():
    rq = make()
    with pytest.raises(ValueError, match=r"shape \[..., dim=8\].*got shape \(4, 5\)"):
        rq(torch.randn(4, 5))
    with pytest.raises(ValueError, match="at least one leading dimension"):
        rq(torch.randn(D))
    with pytest.raises(TypeError, match="floating-point"):
        rq(torch.ones(4, D, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        rq([[0.0] * D])
    with pytest.raises(ValueError, match=r"codes must have shape \(4, 3\)"):
        rq(torch.randn(4, D), codes=torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="codes must lie in"):
        rq(torch.randn(4, D), codes=torch.full((4, L), N))
    with pytest.raises(TypeError, match="does not implement the option.*rotation_trick"):
        ResidualQuantizer(dim=D, num_quantizers=L, codebook_size=N, rotation_trick=True)
    with pytest.raises(ValueError, match="exclude each other"):
        ResidualQuantizer(dim=D, num_quantizers=L, codebook_size=N, ema_update=True, learnable_codebook=True)
    with pytest.raises(ValueError, match="decay must lie in"):
        ResidualQuantizer(dim=D, num_quantizers=L, codebook_size=N, decay=1.0)
    with pytest.raises(ValueError, match="codebook_size must be an int >= 1"):
        ResidualQuantizer(dim=D, num_quantizers=L, codebook_size=0)
    with pytest.raises(ValueError, match="holds no vectors"):
        rq.init_codebooks(torch.empty(0, D))


def reference_code_rq(z, codebooks, codes, commitment_weight):
    """The LETTER reference code's residual quantizer, written out: each level returns its straight-through
    output ``x_res = r + sg(e - r)`` and the next residual is ``r - x_res``; loss = mean over levels of
    ``mse(e, sg(r)) + mu * mse(sg(e), r)``; output = the sum of the levels' ``x_res``."""
    r, out, losses = z, 0, []
    for level in range(codebooks.shape[0]):
        e = codebooks[level][codes[:, level]]
        losses.append(F.mse_loss(e, r.detach()) + commitment_weight * F.mse_loss(e.detach(), r))
        x_res = r + (e - r).detach()
        r = r - x_res
        out = out + x_res
    return out, torch.stack(losses).mean()


def test_straight_through_chain_gives_the_reference_code_gradients():
    """residual_chain="straight-through": the encoder (here a linear layer) and the codebooks get exactly the
    gradients of the reference code's chain, which differ from the default chain's (that one also pulls the
    encoder towards levels 2..L)."""
    g = torch.Generator().manual_seed(4)
    s, w = torch.randn(40, 5, generator=g), torch.randn(5, D, generator=g)
    target = torch.randn(40, D, generator=g)
    grads = {}
    for chain in ("straight-through", "stopped", "by hand"):
        rq = make(ema_update=False, learnable_codebook=True, commitment_weight=0.25,
                  residual_chain="straight-through" if chain == "by hand" else chain)
        enc = w.clone().requires_grad_(True)
        z = s @ enc
        codes, _ = rq.search(z)
        if chain == "by hand":
            quantized, loss = reference_code_rq(z, rq.codebooks, codes, 0.25)
        else:
            quantized, _, _, parts = rq(z, codes=codes, return_loss_breakdown=True)
            loss = parts.mean
        total = loss + ((quantized - target) ** 2).mean()   # a reconstruction-like term through the output
        grads[chain] = torch.autograd.grad(total, [enc, rq.codebooks])
    for got, want in zip(grads["straight-through"], grads["by hand"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(grads["stopped"][0], grads["by hand"][0])       # the encoder's differs
    torch.testing.assert_close(grads["stopped"][1], grads["by hand"][1])      # the codebooks' does not


def test_straight_through_chain_commits_only_the_first_level():
    rq = make(ema_update=False, learnable_codebook=False, commitment_weight=1.0, residual_chain="straight-through")
    z = torch.randn(32, D, requires_grad=True)
    _, _, losses = rq(z)
    for level in range(L):
        (grad,) = torch.autograd.grad(losses[level], z, retain_graph=True)
        assert grad.any() == (level == 0), level            # levels 2..L: exactly zero
    stopped = make(ema_update=False, learnable_codebook=False, commitment_weight=1.0)
    torch.testing.assert_close(stopped(z)[2], losses)       # same values
    with pytest.raises(ValueError, match="residual_chain must be one of"):
        make(residual_chain="detached")
    with pytest.raises(ValueError, match="codebook_init must be one of"):
        make(codebook_init="random")


def test_constrained_kmeans_codebook_init_balances_every_level():
    from letter_fast.nn.kmeans import reference_cluster_sizes

    g = torch.Generator().manual_seed(6)
    x = torch.randn(1200, D, generator=g) * torch.rand(1200, 1, generator=g) * 3
    x[:400] = x[:400] * 0.05 + 4                              # a crowded corner
    lo, hi = reference_cluster_sizes(1200, N)                 # (2, 75)
    loads = {}
    for init in ("kmeans", "constrained-kmeans"):
        rq = make(kmeans_init=True, kmeans_iters=10, codebook_init=init, threshold_ema_dead_code=1e-9)
        rq.init_codebooks(x, seed=3)
        loads[init] = rq.cluster_size                         # the k-means clusters' sizes, per level
        again = make(kmeans_init=True, kmeans_iters=10, codebook_init=init)
        again.init_codebooks(x, seed=3)
        assert torch.equal(again.codebooks, rq.codebooks)     # seeded
    assert (loads["constrained-kmeans"] >= lo).all() and (loads["constrained-kmeans"] <= hi).all()
    assert loads["kmeans"].max() > hi                          # plain k-means leaves a code with too many
