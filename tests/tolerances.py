"""One table of tolerances per dtype, and assertion helpers whose messages carry the numbers."""

from __future__ import annotations

import torch

# (rtol, atol) for values computed in float32 and stored in the given dtype.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
    torch.float64: (1e-10, 1e-12),
}

# Accuracy measured against PyTorch itself (used where the table's tolerances are too loose to
# see a loss of float32 digits, e.g. at low softmax temperatures): a backend's largest error
# against a float64 oracle may be at most VS_PYTORCH_FLOAT32 times the largest error of PyTorch's
# own float32 computation of the same formula on the same inputs. PyTorch's error is floored at
# ERROR_FLOOR_ULPS float32 ulps of the tensor's largest magnitude (at least 1): on small problems
# it is sometimes exact by luck. Measured for contrastive_loss at tau = 0.05-0.1: at most 3.0x
# (cpu kernel, ~1,400 cases) and 1.3x (Triton, ~80 cases); 25-55x before lse went to float64.
FLOAT32_EPS = 2.0 ** -23
VS_PYTORCH_FLOAT32 = 4.0
ERROR_FLOOR_ULPS = 4.0

# Two codes count as a float32 near-tie when their squared distances differ by less than this
# fraction of ||r||^2 + max ||e||^2 (float32 rounding of the expanded distance is ~1e-7 of that).
NEAR_TIE_RTOL = 1e-5


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = None, what: str = "value"):
    dtype = dtype or expected.dtype
    rtol, atol = TOLERANCES[dtype]
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    if a.numel() == 0:
        return
    assert torch.isfinite(a).all(), f"{what}: {int((~torch.isfinite(a)).sum())} NaN/Inf values"
    err = (a - e).abs()
    bad = err > atol + rtol * e.abs()
    if bad.any():
        worst = int(err.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{a.numel()} elements off (rtol={rtol}, atol={atol}); worst at {idx}: "
            f"{a.flatten()[worst].item():.8g} vs {e.flatten()[worst].item():.8g}"
        )


def assert_no_worse_than_pytorch(actual: torch.Tensor, expected: torch.Tensor, pytorch_float32: torch.Tensor,
                                 what: str = "value", factor: float = VS_PYTORCH_FLOAT32,
                                 floor_ulps: float = ERROR_FLOOR_ULPS):
    """max |actual - expected| <= factor * max(max |pytorch_float32 - expected|, floor_ulps ulps).

    ``expected`` is the float64 oracle, ``pytorch_float32`` PyTorch's float32 result on the very
    same inputs: the error-vs-float64 form "no worse than k x PyTorch float32's own error".
    """
    a, e, p = actual.double(), expected.double(), pytorch_float32.double()
    assert a.shape == e.shape == p.shape, f"{what}: shapes {tuple(a.shape)}, {tuple(e.shape)}, {tuple(p.shape)}"
    if e.numel() == 0:
        return
    assert torch.isfinite(a).all(), f"{what}: {int((~torch.isfinite(a)).sum())} NaN/Inf values"
    scale = max(1.0, float(e.abs().max()))
    ours, theirs = float((a - e).abs().max()), float((p - e).abs().max())
    floor = floor_ulps * FLOAT32_EPS * scale
    allowed = factor * max(theirs, floor)
    assert ours <= allowed, (
        f"{what}: max error {ours:.3g} against float64 is {ours / max(theirs, floor):.1f}x PyTorch float32's "
        f"{theirs:.3g} (allowed: {factor:g}x, PyTorch's error floored at {floor:.3g})")


def assert_valid_rq(z: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor, z_hat: torch.Tensor,
                    ref_codes: torch.Tensor | None = None, chunk: int = 8192):
    """Check residual-quantization output exactly, telling float near-ties from real errors.

    Along the backend's own residual chain, recomputed in float64, each chosen code must be the
    nearest one up to NEAR_TIE_RTOL; a code that differs from the reference's is therefore only
    accepted where the two were within float rounding. z_hat must equal the sum of chosen rows.
    """
    B, d = z.shape
    L, N, _ = codebooks.shape
    assert codes.shape == (B, L) and codes.dtype == torch.int64, f"codes: {tuple(codes.shape)} {codes.dtype}"
    assert z_hat.shape == (B, d) and z_hat.dtype == z.dtype, f"z_hat: {tuple(z_hat.shape)} {z_hat.dtype}"
    if B == 0:
        return
    codes = codes.cpu()
    assert int(codes.min()) >= 0 and int(codes.max()) < N, "codes out of range"
    cb = codebooks.detach().cpu().double()
    e_norms = cb.square().sum(-1)  # [L, N]
    for start in range(0, B, chunk):
        r = z.detach().cpu()[start:start + chunk].double()
        c = codes[start:start + chunk]
        for level in range(L):
            dist = r.square().sum(1, keepdim=True) - 2 * r @ cb[level].T + e_norms[level]
            gap = dist.gather(1, c[:, level:level + 1]).squeeze(1) - dist.min(1).values
            tol = NEAR_TIE_RTOL * (r.square().sum(1) + e_norms[level].max())
            bad = gap > tol
            if bad.any():
                row = int(bad.nonzero()[0])
                raise AssertionError(
                    f"level {level}: {int(bad.sum())} rows chose a code that is not the nearest; first row "
                    f"{start + row}: chose {int(c[row, level])} "
                    f"(gap {gap[row].item():.3g} > tol {tol[row].item():.3g}), "
                    f"nearest {int(dist[row].argmin())}"
                )
            r = r - cb[level][c[:, level]]
    expected = cb[torch.arange(L), codes].sum(1)
    assert_close(z_hat.cpu(), expected, dtype=z.dtype, what="z_hat")
    if ref_codes is not None:
        # Near-ties aside, codes are identical; report how many rows differ for the log.
        differing = (codes != ref_codes.cpu()).any(1).float().mean().item()
        assert differing < 0.01, f"{differing:.2%} of rows differ from the reference: too many for float near-ties"
