"""``ResidualQuantizer``: a residual vector quantizer module on the fused ``residual_quantize`` op.

Residual quantization (RQ-VAE, Lee et al., "Autoregressive Image Generation using Residual Quantization",
CVPR 2022; SoundStream, Zeghidour et al. 2021) approximates a latent ``z`` with ``L`` codebooks
``C_l = {e_{l,1..N}}``, coarse to fine:

    r_0 = z,   c_l = argmin_n ||r_{l-1} - e_{l,n}||^2,   r_l = r_{l-1} - e_{l,c_l},   z_hat = sum_l e_{l,c_l}

The nearest-code search is the fused :func:`letter_fast.ops.residual_quantize` (one pass over ``z``, no
``[B, N]`` distance matrix). Training (the encoder and the codebooks):

* straight-through estimator: the module returns ``z + sg(z_hat - z)``, whose value is ``z_hat`` and
  whose gradient reaches ``z`` unchanged (``sg`` = stop-gradient);
* per level ``l`` the loss ``L_l = ||sg(r_{l-1}) - e_{l,c_l}||^2 + beta ||r_{l-1} - sg(e_{l,c_l})||^2``
  (means over batch and features): the codebook term moves the code towards the residual it encodes, the
  commitment term (weight ``beta = commitment_weight``) keeps the encoder near its codes. With
  ``residual_chain="stopped"`` (the default) the chain runs on ``sg(e)`` (``r_l = r_{l-1} - sg(e_{l,c_l})``), so
  every level's commitment reaches the encoder. ``residual_chain="straight-through"`` is the LETTER reference
  code's chain, ``r_l = r_{l-1} - (r_{l-1} + sg(e_{l,c_l} - r_{l-1}))``: the value is the same, but the gradient
  of ``r_l`` with respect to ``r_{l-1}`` is ``I - I = 0``, so ``r_1 .. r_{L-1}`` are constants for autograd and
  only level 1's commitment reaches the encoder (the codebook terms and ``quantized`` are unchanged);
* or, with ``ema_update=True`` (the default, as in vector-quantize-pytorch), no codebook gradient: each
  level's codes follow exponential moving averages of the residuals assigned to them (van den Oord et al.,
  "Neural Discrete Representation Learning", NeurIPS 2017, appendix; decay ``gamma``)

      n_l <- gamma n_l + (1 - gamma) count_l,     m_l <- gamma m_l + (1 - gamma) sum of r_{l-1} over code's items
      e_l = m_l / n~_l,    n~ = (n + eps) / (sum n + N eps) * sum n     (Laplace-smoothed counts)

  and ``L_l`` keeps only the commitment term;
* dead-code reset (``threshold_ema_dead_code > 0``): a code whose EMA count ``n`` falls below the threshold
  is replaced by a random residual of the current batch at its level (its count reset to the threshold);
* k-means initialization (``kmeans_init=True``): on the first training batch, or by an explicit
  :meth:`ResidualQuantizer.init_codebooks`, level ``l``'s codes are the k-means centers of the residuals
  ``r_{l-1}`` left by the levels before it. ``codebook_init="kmeans"`` (the default) is k-means++ and Lloyd;
  ``"constrained-kmeans"`` is the LETTER reference code's size-constrained k-means, where every code holds
  between ``min(n // 512, 50)`` and 4x that many of the ``n`` vectors at the start
  (:func:`letter_fast.nn.kmeans.reference_cluster_sizes`, :func:`letter_fast.nn.kmeans.constrained_kmeans`).

Drop-in for vector-quantize-pytorch's ``ResidualVQ``: the shared constructor arguments have its names
(``dim``, ``num_quantizers``, ``codebook_size``, ``commitment_weight``, ``decay``, ``eps``, ``ema_update``,
``learnable_codebook``, ``kmeans_init``, ``kmeans_iters``, ``threshold_ema_dead_code``) and ``forward``
returns ``(quantized, codes, losses)`` with ``codes [..., L]`` and ``losses [L]`` (so ``losses.sum()`` goes
into the training loss). Where the two differ, on purpose: the gradient estimator is the plain
straight-through one above (``ResidualVQ``'s default is the rotation trick); a learnable codebook is trained
by the RQ-VAE loss above, with ``beta`` on the commitment term only; the losses are computed in eval mode
too (``ResidualVQ`` returns zeros there); k-means is seeded k-means++ (deterministic for a seed). Options
of ``ResidualVQ`` that this module does not implement raise ``TypeError`` naming them.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from letter_fast import ops
from letter_fast.nn.kmeans import constrained_kmeans, kmeans, reference_cluster_sizes

# how init_codebooks fits each level's codes; how the residual chain's gradient flows (see the module docstring)
CODEBOOK_INITS = ("kmeans", "constrained-kmeans")
RESIDUAL_CHAINS = ("stopped", "straight-through")


class QuantizerLosses(NamedTuple):
    """Loss terms of one :meth:`ResidualQuantizer.forward` call.

    ``codebook [L]`` and ``commitment [L]`` are the unweighted per-level terms (``codebook`` is zeros
    unless the codebooks are learnable); ``mean`` is the level-mean of the weighted loss,
    ``mse(e, sg(r)) + beta * mse(sg(e), r)`` over all ``[M, L, d]`` elements in one reduction (equal to
    ``losses.mean()`` up to rounding).
    """

    codebook: torch.Tensor
    commitment: torch.Tensor
    mean: torch.Tensor


class ResidualQuantizer(nn.Module):
    """Residual vector quantizer with ``num_quantizers`` codebooks of ``codebook_size`` codes of size ``dim``.

    Args:
        dim: feature size ``d`` of the latents (their last dimension).
        num_quantizers: number of levels ``L``.
        codebook_size: codes per level ``N``.
        commitment_weight: ``beta``, the weight of the commitment term.
        ema_update: update the codebooks by exponential moving averages (no codebook gradient).
        learnable_codebook: train the codebooks by gradient (the codebook loss term); default
            ``not ema_update``. With neither, the codebooks stay as initialized (except dead-code resets).
        decay: EMA decay ``gamma`` in ``[0, 1)`` for the code counts and sums.
        eps: Laplace smoothing of the EMA counts.
        kmeans_init: start from zero codebooks and initialize them by k-means on the first training batch
            (or by :meth:`init_codebooks`); otherwise a uniform random initialization from the global RNG.
        kmeans_iters: Lloyd iterations of that k-means.
        codebook_init: ``"kmeans"`` (k-means++ and Lloyd) or ``"constrained-kmeans"`` (every code starts with
            between ``min(n // 512, 50)`` and 4x that many of the ``n`` vectors, as the LETTER reference code).
        residual_chain: ``"stopped"`` (``r_l = r_{l-1} - sg(e_l)``: every level's commitment reaches the input) or
            ``"straight-through"`` (the LETTER reference code's chain: only level 1's commitment does).
        threshold_ema_dead_code: reset codes whose EMA count falls below this (0: never).
        backend: backend of the nearest-code search (see :func:`letter_fast.ops.residual_quantize`).

    ``codebooks`` (``[L, N, d]``) is an ``nn.Parameter``; with ``ema_update`` it does not require grad.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        commitment_weight: float = 1.0,
        ema_update: bool = True,
        learnable_codebook: Optional[bool] = None,
        decay: float = 0.8,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
        codebook_init: str = "kmeans",
        residual_chain: str = "stopped",
        backend: Optional[str] = None,
        **unsupported,
    ):
        super().__init__()
        if unsupported:
            raise TypeError(
                f"ResidualQuantizer does not implement the option(s) {', '.join(sorted(unsupported))} of "
                "vector-quantize-pytorch's ResidualVQ; it takes dim, num_quantizers, codebook_size, "
                "commitment_weight, ema_update, learnable_codebook, decay, eps, kmeans_init, kmeans_iters, "
                "threshold_ema_dead_code, codebook_init, residual_chain, backend"
            )
        for name, value in (("dim", dim), ("num_quantizers", num_quantizers), ("codebook_size", codebook_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ResidualQuantizer: {name} must be an int >= 1, got {value!r}")
        if learnable_codebook is None:
            learnable_codebook = not ema_update
        if ema_update and learnable_codebook:
            raise ValueError("ResidualQuantizer: ema_update=True and learnable_codebook=True exclude each other; "
                             "pick EMA codebook updates or gradient-trained codebooks")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ResidualQuantizer: decay must lie in [0, 1), got {decay}")
        if not (commitment_weight >= 0 and eps > 0 and threshold_ema_dead_code >= 0 and kmeans_iters >= 0):
            raise ValueError(
                "ResidualQuantizer: need commitment_weight >= 0, eps > 0, threshold_ema_dead_code >= 0 and "
                f"kmeans_iters >= 0; got {commitment_weight}, {eps}, {threshold_ema_dead_code}, {kmeans_iters}"
            )
        if codebook_init not in CODEBOOK_INITS:
            raise ValueError(f"ResidualQuantizer: codebook_init must be one of {', '.join(map(repr, CODEBOOK_INITS))}, "
                             f"got {codebook_init!r}")
        if residual_chain not in RESIDUAL_CHAINS:
            raise ValueError(f"ResidualQuantizer: residual_chain must be one of "
                             f"{', '.join(map(repr, RESIDUAL_CHAINS))}, got {residual_chain!r}")
        self.codebook_init, self.residual_chain = codebook_init, residual_chain
        self.dim, self.num_quantizers, self.codebook_size = dim, num_quantizers, codebook_size
        self.commitment_weight = float(commitment_weight)
        self.ema_update, self.learnable_codebook = bool(ema_update), bool(learnable_codebook)
        self.decay, self.eps = float(decay), float(eps)
        self.kmeans_init, self.kmeans_iters = bool(kmeans_init), int(kmeans_iters)
        self.threshold_ema_dead_code = float(threshold_ema_dead_code)
        self.backend = backend
        codebooks = torch.zeros(num_quantizers, codebook_size, dim)
        if not kmeans_init:
            # uniform in +-sqrt(6 / d), per level (kaiming-uniform with fan-in d): codes of about unit norm
            bound = math.sqrt(6.0 / dim)
            codebooks.uniform_(-bound, bound)
        self.codebooks = nn.Parameter(codebooks, requires_grad=self.learnable_codebook)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        if self.tracks_usage:
            # EMA state: per-code counts n and sums m (m / n = the code); initial counts 1 make m = e
            self.register_buffer("cluster_size", torch.ones(num_quantizers, codebook_size))
            self.register_buffer("embed_avg", codebooks.clone())

    @property
    def tracks_usage(self) -> bool:
        """Whether the module keeps EMA code counts (for EMA updates or dead-code resets)."""
        return self.ema_update or self.threshold_ema_dead_code > 0

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_quantizers={self.num_quantizers}, codebook_size={self.codebook_size}, "
                f"commitment_weight={self.commitment_weight}, ema_update={self.ema_update}, decay={self.decay}, "
                f"kmeans_init={self.kmeans_init}, threshold_ema_dead_code={self.threshold_ema_dead_code}, "
                f"codebook_init={self.codebook_init!r}, residual_chain={self.residual_chain!r}")

    # ------------------------------------------------------------------ helpers

    def _flatten(self, x: torch.Tensor, what: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ResidualQuantizer: {what} must be a torch.Tensor [..., {self.dim}], "
                            f"got {type(x).__name__}")
        if x.dim() < 2 or x.shape[-1] != self.dim:
            raise ValueError(f"ResidualQuantizer: {what} must have shape [..., dim={self.dim}] with at least one "
                             f"leading dimension (e.g. [batch, {self.dim}] or [batch, seq, {self.dim}]), "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"ResidualQuantizer: {what} must be a floating-point tensor, got {x.dtype}; "
                            "cast it with .float()")
        # a [M, d] input is used as it is: no view node, so gradients into x accumulate in the same order as
        # when the caller's own graph uses x directly
        z = x if x.dim() == 2 else x.reshape(-1, self.dim)
        return z.to(self.codebooks.dtype)

    # ------------------------------------------------------------------ codebooks

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, seed: Optional[int] = None) -> None:
        """k-means initialization from latents ``x [..., d]``: level by level on the residuals.

        Level ``l``'s codes are ``kmeans(r_{l-1}, N)`` with ``r_0 = z`` and ``r_l = r_{l-1} - e_{l, label}``
        (the k-means labels). With ``codebook_init="constrained-kmeans"`` they are the centers of
        ``constrained_kmeans(r_{l-1}, N, lo, hi)`` instead: k-means++ seeding, then ``kmeans_iters`` Lloyd
        iterations whose assignment keeps every cluster's size in ``[lo, hi] = reference_cluster_sizes(n, N)``
        for the ``n`` vectors of ``x``. ``seed``: level ``l`` uses ``seed + l``; None draws one from the global
        RNG. With EMA, the counts and sums restart from the k-means clusters.
        """
        r = self._flatten(x).detach()
        if r.shape[0] == 0:
            raise ValueError("ResidualQuantizer.init_codebooks: x holds no vectors; k-means needs at least one")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        for level in range(self.num_quantizers):
            if self.codebook_init == "constrained-kmeans":
                lo, hi = reference_cluster_sizes(r.shape[0], self.codebook_size)
                centers, labels = constrained_kmeans(r, self.codebook_size, lo, hi, iters=self.kmeans_iters,
                                                     seed=seed + level, init_iters=0)
            else:
                centers, labels = kmeans(r, self.codebook_size, iters=self.kmeans_iters, seed=seed + level)
            self.codebooks[level] = centers
            if self.tracks_usage:
                counts = torch.bincount(labels, minlength=self.codebook_size).to(self.cluster_size.dtype)
                self.cluster_size[level] = counts
                self.embed_avg[level] = centers * counts[:, None]
            r = r - centers[labels]
        self.initialized.fill_(True)

    @torch.no_grad()
    def search(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes without gradients: ``(codes [..., L], z_hat [..., d])`` by the fused op."""
        z = self._flatten(x)
        codes, z_hat = ops.residual_quantize(z.detach(), self.codebooks.detach(), backend=self.backend)
        lead = x.shape[:-1]
        return codes.view(*lead, self.num_quantizers), z_hat.view(*lead, self.dim).to(x.dtype)

    def get_codes_from_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-level code embeddings ``[L, ..., d]`` of ``codes [..., L]`` (as ``ResidualVQ``'s method)."""
        flat = codes.reshape(-1, codes.shape[-1]) if codes.dim() >= 1 else codes
        e = ops.residual_code_embeddings(flat, self.codebooks)  # validates levels, range, dtype
        return e.permute(1, 0, 2).reshape(self.num_quantizers, *codes.shape[:-1], self.dim)

    def get_output_from_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """``z_hat [..., d] = sum_l e_{l, codes[..., l]}`` (as ``ResidualVQ``'s method)."""
        flat = codes.reshape(-1, codes.shape[-1]) if codes.dim() >= 1 else codes
        return ops.residual_dequantize(flat, self.codebooks).view(*codes.shape[:-1], self.dim)

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, *, codes: Optional[torch.Tensor] = None, return_all_codes: bool = False,
                return_loss_breakdown: bool = False):
        """Quantize latents ``x [..., d]``.

        Returns ``(quantized [..., d], codes [..., L], losses [L])``: ``quantized = x + sg(z_hat - x)`` (value
        ``z_hat``, gradient straight through to ``x``), ``losses[l]`` the level's codebook + ``beta`` *
        commitment loss. ``return_all_codes`` appends the per-level code embeddings ``[L, ..., d]``
        (differentiable with respect to learnable codebooks); ``return_loss_breakdown`` appends a
        :class:`QuantizerLosses`.

        ``codes``: quantize with these codes ``[..., L]`` (e.g. a balanced assignment) instead of the nearest
        ones. In training mode, EMA updates and dead-code resets run after the outputs are formed (the
        outputs use the codebooks as they were); the first training batch initializes k-means codebooks.
        """
        z = self._flatten(x)
        M, L, d = z.shape[0], self.num_quantizers, self.dim
        if not bool(self.initialized):
            if not self.training:
                raise RuntimeError("ResidualQuantizer: the codebooks are not initialized (kmeans_init=True): call "
                                   "init_codebooks(latents) or run one batch in training mode first")
            self.init_codebooks(z)
        if codes is None:
            with torch.no_grad():
                flat_codes, _ = ops.residual_quantize(z.detach(), self.codebooks.detach(), backend=self.backend)
        else:
            if not isinstance(codes, torch.Tensor) or tuple(codes.shape) != (*x.shape[:-1], L):
                got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
                raise ValueError(f"ResidualQuantizer: codes must have shape {(*x.shape[:-1], L)} "
                                 f"(x's leading dimensions + num_quantizers), got {got}")
            flat_codes = codes.reshape(M, L)
        e = ops.residual_code_embeddings(flat_codes, self.codebooks)                 # [M, L, d]
        e_sg = e.detach()
        # r_{l-1} = z - sum_{j<l} sg(e_j): the codebooks enter the chain only through sg(e)
        prefix = torch.cumsum(e_sg, dim=1) - e_sg
        residuals = z[:, None, :] - prefix                                      # [M, L, d]
        if self.residual_chain == "straight-through" and L > 1:
            # the reference's r_l = r_{l-1} - (r_{l-1} + sg(e_l - r_{l-1})): same values, d r_l / d r_{l-1} = 0,
            # so only r_0 = z carries a gradient
            residuals = torch.cat([residuals[:, :1], residuals[:, 1:].detach()], dim=1)
        commitment = F.mse_loss(e_sg, residuals, reduction="none").mean(dim=(0, 2))
        if self.learnable_codebook:
            codebook = F.mse_loss(e, residuals.detach(), reduction="none").mean(dim=(0, 2))
            losses = codebook + self.commitment_weight * commitment
        else:
            codebook = torch.zeros_like(commitment)
            losses = self.commitment_weight * commitment
        z_hat = e.sum(dim=1)
        quantized = z + (z_hat - z).detach()
        if self.training:
            self._update_codebooks(flat_codes, residuals.detach())

        lead = x.shape[:-1]
        if x.dim() != 2:
            quantized, flat_codes = quantized.view(*lead, d), flat_codes.view(*lead, L)
        out = [quantized.to(x.dtype), flat_codes, losses]
        if return_all_codes:
            out.append(e.permute(1, 0, 2).reshape(L, *lead, d))
        if return_loss_breakdown:
            # one reduction over [M, L, d] (the level-mean of `losses` up to rounding)
            if self.learnable_codebook:
                mean = F.mse_loss(e, residuals.detach()) + self.commitment_weight * F.mse_loss(e_sg, residuals)
            else:
                mean = self.commitment_weight * F.mse_loss(e_sg, residuals)
            out.append(QuantizerLosses(codebook, commitment, mean))
        return tuple(out)

    @torch.no_grad()
    def _update_codebooks(self, codes: torch.Tensor, residuals: torch.Tensor) -> None:
        """EMA update of counts, sums and codes, then dead-code resets (training mode)."""
        if not self.tracks_usage or codes.shape[0] == 0:
            return
        L, N, d = self.codebooks.shape
        flat = (codes + torch.arange(L, device=codes.device) * N).reshape(-1)
        counts = torch.bincount(flat, minlength=L * N).view(L, N).to(self.cluster_size.dtype)
        sums = torch.zeros(L * N, d, dtype=self.embed_avg.dtype, device=residuals.device)
        sums.index_add_(0, flat, residuals.reshape(-1, d).to(sums.dtype))
        self.cluster_size.lerp_(counts, 1.0 - self.decay)
        self.embed_avg.lerp_(sums.view(L, N, d), 1.0 - self.decay)
        if self.ema_update:
            total = self.cluster_size.sum(dim=1, keepdim=True)
            smoothed = (self.cluster_size + self.eps) / (total + N * self.eps) * total
            self.codebooks.copy_(self.embed_avg / smoothed[..., None])
        if self.threshold_ema_dead_code > 0:
            self._reset_dead_codes(residuals)

    @torch.no_grad()
    def _reset_dead_codes(self, residuals: torch.Tensor) -> None:
        """Replace codes with EMA count < threshold by distinct random residuals of this batch at their level."""
        dead = self.cluster_size < self.threshold_ema_dead_code                 # [L, N]
        if not bool(dead.any()):
            return
        M = residuals.shape[0]
        device = residuals.device
        for level in dead.any(dim=1).nonzero().flatten().tolist():
            idx = dead[level].nonzero().flatten()
            if idx.numel() > M:  # fewer samples than dead codes: reset a random subset now, the rest later
                idx = idx[torch.randperm(idx.numel(), device=device)[:M]]
            samples = residuals[torch.randperm(M, device=device)[:idx.numel()], level].to(self.codebooks.dtype)
            self.codebooks[level, idx] = samples
            self.cluster_size[level, idx] = self.threshold_ema_dead_code
            self.embed_avg[level, idx] = samples * self.threshold_ema_dead_code
