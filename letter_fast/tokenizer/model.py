"""LETTER: a learnable item tokenizer (Wang et al., "Learnable Item Tokenization for Generative
Recommendation", CIKM 2024), on top of an RQ-VAE (Lee et al., CVPR 2022; TIGER, Rajput et al.,
NeurIPS 2023).

An item's semantic embedding ``s`` is encoded to a latent ``z = E(s)``, residual-quantized with
``L`` codebooks into codes ``[c_1..c_L]`` and a quantized latent ``z_hat = sum_l e_{l,c_l}``, and
decoded back ``s_hat = D(z + sg(z_hat - z))`` (straight-through). The loss (docs/method.md, section 2):

    L = L_recon + mean_l (L_cb,l + beta * L_div,l) + alpha * L_CF
    L_recon = mse(s_hat, s)
    L_cb,l  = mse(e_{l,c_l}, sg(r_{l-1})) + mu * mse(sg(e_{l,c_l}), r_{l-1}),  r_0 = z,
              r_l = r_{l-1} - sg(e_{l,c_l})        (the chain runs on sg(e): every level commits)
    L_CF    = CE(z_hat @ h^T, arange(B))           (in-batch InfoNCE against CF embeddings h)
    L_div,l = CE(e_{l,c_i} @ C_l^T with c_i masked out, a random code of c_i's cluster)

``residual_chain`` chooses that chain's gradient: ``"stopped"`` (the default, above) or ``"straight-through"``, the
reference code's ``r_l = r_{l-1} - (r_{l-1} + sg(e_{l,c_l} - r_{l-1}))``, whose residuals past ``r_0`` pass no
gradient, so only level 1's commitment reaches the encoder (docs/method.md#reference-quirk). ``codebook_init``
chooses the k-means start: ``"kmeans"`` (k-means++ and Lloyd) or ``"constrained-kmeans"``, the reference's
size-constrained k-means (every code starts with ``min(n // 512, 50)`` to 4x that many items).

``L_CF`` is computed on the quantized ``z_hat`` (its value in both settings); ``cf_gradient`` says where its
gradient goes: ``"encoder"`` (the default) evaluates it on ``sg(z_hat) + (z - sg(z))``, the reference code's
path (it feeds the straight-through latent), where only the encoder gets it; ``"encoder+codebooks"`` evaluates it
on ``z_hat + (z - sg(z))``, so the gradient reaches the codebooks (through ``z_hat``) and the encoder (straight
through ``z``). On Scientific (3 seeds) the reference's path keeps more first-level codes in use and collides
less at nearly the same CF-pair code similarity (benchmarks/results/tokenizer_variants_seeds_scientific.md).
The last level is assigned by Sinkhorn-balanced optimal transport during training and by the
nearest code at inference. ``alpha = 0`` and ``beta = 0`` give the plain RQ-VAE of TIGER.

Built from the :mod:`letter_fast.nn` modules: :class:`~letter_fast.nn.ResidualQuantizer` (codebooks,
nearest-code search, straight-through estimator, ``L_cb``; gradient-trained codebooks, no EMA),
:class:`~letter_fast.nn.InBatchContrastiveLoss` (``L_CF``) and :class:`~letter_fast.nn.CodebookDiversityLoss`
(``L_div``); this module adds the encoder/decoder, the Sinkhorn last level and the code clusters.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from letter_fast.nn import CodebookDiversityLoss, InBatchContrastiveLoss, ResidualQuantizer
from letter_fast.nn.kmeans import squared_distances
from letter_fast.nn.residual_quantizer import CODEBOOK_INITS, RESIDUAL_CHAINS  # noqa: F401  (re-exported)
from letter_fast.ops import sinkhorn_assign
from letter_fast.tokenizer.clustering import constrained_kmeans

# where the gradient of L_CF goes (docs/method.md#cf-regularizer): the encoder only (the reference code's path) or
# the encoder and the codebooks
CF_GRADIENTS = ("encoder", "encoder+codebooks")


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last); xavier-normal weights, zero bias."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class LetterTokenizer(nn.Module):
    """RQ-VAE item tokenizer with LETTER's collaborative and diversity regularizers.

    Variants by switch: ``alpha=0, beta=0`` plain RQ-VAE (TIGER); ``alpha>0`` + CF;
    ``beta>0`` + diversity; both: LETTER.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        hidden_dims: Sequence[int] = (512, 256, 128, 64),
        latent_dim: int = 32,
        num_levels: int = 4,
        codebook_size: int = 256,
        commitment: float = 0.25,
        alpha: float = 0.02,
        beta: float = 1e-4,
        cf_temperature: float = 1.0,
        diversity_clusters: int = 10,
        diversity_cluster_sizes: tuple[int, int] = (10, 60),
        sinkhorn_last_level: bool = True,
        sinkhorn_epsilon: float = 0.003,
        sinkhorn_iters: int = 50,
        mlp_precision: str = "fp32",
        cf_gradient: str = "encoder",
        codebook_init: str = "kmeans",
        residual_chain: str = "stopped",
        backend: Optional[str] = None,
    ):
        super().__init__()
        if num_levels < 1 or codebook_size < 1:
            raise ValueError(f"num_levels and codebook_size must be >= 1, got {num_levels}, {codebook_size}")
        lo, hi = diversity_cluster_sizes
        if beta > 0 and not (diversity_clusters * lo <= codebook_size <= diversity_clusters * hi):
            raise ValueError(
                f"{codebook_size} codes cannot form {diversity_clusters} clusters of {lo}..{hi} codes; "
                "change diversity_clusters or diversity_cluster_sizes"
            )
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.num_levels, self.codebook_size = num_levels, codebook_size
        self.commitment, self.alpha, self.beta = commitment, alpha, beta
        self.cf_temperature = cf_temperature
        self.diversity_clusters, self.diversity_cluster_sizes = diversity_clusters, (lo, hi)
        self.sinkhorn_last_level = sinkhorn_last_level
        self.sinkhorn_epsilon, self.sinkhorn_iters = sinkhorn_epsilon, sinkhorn_iters
        if mlp_precision not in ("fp32", "bf16"):
            raise ValueError(f"mlp_precision must be 'fp32' or 'bf16', got {mlp_precision!r}")
        self.mlp_precision = mlp_precision
        if cf_gradient not in CF_GRADIENTS:
            raise ValueError(f"cf_gradient must be one of {', '.join(map(repr, CF_GRADIENTS))}, got {cf_gradient!r}")
        self.cf_gradient = cf_gradient
        # codebook_init and residual_chain are checked by the ResidualQuantizer built below
        self.codebook_init, self.residual_chain = codebook_init, residual_chain
        self.backend = backend
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        # zero codebooks until init_codebooks (k-means on the encoded catalogue); trained by gradient
        self.quantizer = ResidualQuantizer(
            dim=latent_dim, num_quantizers=num_levels, codebook_size=codebook_size, commitment_weight=commitment,
            ema_update=False, learnable_codebook=True, kmeans_init=True, kmeans_iters=25,
            codebook_init=codebook_init, residual_chain=residual_chain, backend=backend,
        )
        self.cf_loss_fn = InBatchContrastiveLoss(temperature=cf_temperature, backend=backend)
        self.diversity_loss_fn = CodebookDiversityLoss(backend=backend)
        # cluster label of every code, per level, for the diversity loss (refreshed each epoch)
        self.register_buffer("code_clusters", torch.zeros(num_levels, codebook_size, dtype=torch.long))

    # ------------------------------------------------------------------ codebooks

    @property
    def codebooks(self) -> nn.Parameter:
        """The codebooks ``[L, N, d]`` (the quantizer's parameter)."""
        return self.quantizer.codebooks

    @property
    def initialized(self) -> torch.Tensor:
        """Whether :meth:`init_codebooks` has run (a saved buffer of the quantizer)."""
        return self.quantizer.initialized

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the quantizer was a submodule keep its tensors at the top level
        for name in ("codebooks", "initialized"):
            if prefix + name in state_dict and prefix + "quantizer." + name not in state_dict:
                state_dict[prefix + "quantizer." + name] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def init_codebooks(self, embeddings: torch.Tensor, seed: int = 0) -> None:
        """k-means on the latents level by level: level l's centers fit the residuals left by l-1
        (:meth:`letter_fast.nn.ResidualQuantizer.init_codebooks`, level l seeded ``seed + l``); size-constrained
        with ``codebook_init="constrained-kmeans"``."""
        self.quantizer.init_codebooks(self.encoder(embeddings), seed=seed)

    @torch.no_grad()
    def refresh_code_clusters(self, seed: int = 0) -> None:
        """Group each codebook's codes into K size-constrained clusters (LETTER Sec. 3.2.3)."""
        lo, hi = self.diversity_cluster_sizes
        for level in range(self.num_levels):
            _, self.code_clusters[level] = constrained_kmeans(
                self.codebooks[level], self.diversity_clusters, lo, hi, seed=seed + level
            )

    def sample_same_cluster_codes(self, codes: torch.Tensor, generator: Optional[torch.Generator] = None,
                                  u: Optional[torch.Tensor] = None) -> torch.Tensor:
        """For each ``codes[b, l]`` a uniformly random *other* code of its cluster (vectorized).

        Members of every cluster are laid out contiguously (codes sorted by cluster); a draw is a
        random offset in ``[0, size - 1)`` inside the cluster's run, skipping the code itself.
        ``u``: the uniforms ``[B, L]`` to use (default: drawn from ``generator``).
        """
        L, N = self.code_clusters.shape
        order = torch.argsort(self.code_clusters, dim=1, stable=True)           # [L, N] codes by cluster
        position = torch.argsort(order, dim=1)                                    # rank of each code in order
        sizes = torch.zeros(L, self.diversity_clusters, dtype=torch.long, device=codes.device)
        sizes.scatter_add_(1, self.code_clusters, torch.ones_like(self.code_clusters))
        starts = torch.cumsum(sizes, dim=1) - sizes                               # [L, K]
        levels = torch.arange(L, device=codes.device).expand_as(codes)
        cluster = self.code_clusters[levels, codes]                               # [B, L]
        size = sizes[levels, cluster]
        start = starts[levels, cluster]
        own = position[levels, codes] - start
        if u is None:
            u = torch.rand(codes.shape, generator=generator, device=codes.device)
        offset = (u * (size - 1).clamp_min(1)).long()
        offset = offset + (offset >= own).long()                                  # skip the code itself
        offset = torch.where(size > 1, offset, own)                               # singleton: itself
        return order[levels, start + offset]

    def diversity_loss(self, codes: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """``mean_l L_div,l`` for codes ``[B, L]`` and same-cluster positives ``[B, L]``
        (:class:`letter_fast.nn.CodebookDiversityLoss`: the Gram form for ``N <= B``, else the fused
        per-item kernel)."""
        return self.diversity_loss_fn(self.codebooks, codes, positives)

    # ------------------------------------------------------------------ quantization

    def quantize(self, z: torch.Tensor, balanced_last_level: bool = False, shard=None) -> torch.Tensor:
        """Codes ``[B, L]`` of latents ``z`` (nearest codes; Sinkhorn for the last level if asked).

        ``shard`` (a :class:`letter_fast.tokenizer.distributed.BatchShard`): ``z`` is this rank's slice of a global
        batch; the Sinkhorn transport then runs over the gathered global batch (the same problem on every rank)."""
        with torch.no_grad():
            codes, z_hat = self.quantizer.search(z)
            rows = z.shape[0] if shard is None else shard.total
            if balanced_last_level and rows > 1:
                last = self.num_levels - 1
                residual = z.detach() - (z_hat - self.codebooks[last][codes[:, last]].detach())
                if shard is not None:
                    residual = shard.gather(residual)
                assigned = sinkhorn_assign(
                    squared_distances(residual.float(), self.codebooks[last].detach().float()),
                    self.sinkhorn_epsilon, self.sinkhorn_iters, backend=self.backend,
                )
                codes[:, last] = assigned if shard is None else assigned[shard.start:shard.stop]
        return codes

    @torch.no_grad()
    def encode_items(self, embeddings: torch.Tensor, batch_size: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: ``(codes [V, L], latents [V, d])`` by nearest codes at every level."""
        codes, latents = [], []
        for chunk in embeddings.split(batch_size):
            z = self.encoder(chunk)
            latents.append(z)
            codes.append(self.quantize(z))
        return torch.cat(codes), torch.cat(latents)

    # ------------------------------------------------------------------ training

    def _mlp(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The encoder or decoder in training; with ``mlp_precision="bf16"`` its matmuls run under bfloat16 autocast
        (AMX on recent Xeons, tensor cores on GPUs) and the output comes back float32, so quantization and every
        loss stay float32. Inference (:meth:`encode_items`) always runs float32."""
        if self.mlp_precision == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                return net(x).float()
        return net(x)

    def forward(self, s: torch.Tensor, cf: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None, shard=None) -> dict:
        """Losses of one batch: semantic embeddings ``s [B, D_in]``, CF embeddings ``cf [B, d]``.

        ``shard`` (:class:`letter_fast.tokenizer.distributed.BatchShard`): ``s`` and ``cf`` are this rank's rows of
        a global batch; Sinkhorn, the CF negatives and the diversity draws then cover the global batch, and
        ``loss`` is scaled by ``shard.weight`` so that DDP's gradient average is the global batch mean's gradient
        (the other returned terms stay local means)."""
        if not bool(self.initialized):
            raise RuntimeError("codebooks are not initialized: call init_codebooks(embeddings) first")
        z = self._mlp(self.encoder, s)
        codes = self.quantize(z, balanced_last_level=self.training and self.sinkhorn_last_level, shard=shard)
        # quantized = z + sg(z_hat - z); all_codes [L, B, d] = e_{l,c_l}, differentiable w.r.t. the codebooks;
        # losses.mean is L_cb averaged over the levels (the chain r_{l-1} = z - sum_{j<l} sg(e_j); with
        # residual_chain="straight-through" r_1.. pass no gradient)
        quantized, _, _, all_codes, losses = self.quantizer(z, codes=codes, return_all_codes=True,
                                                            return_loss_breakdown=True)
        codebook_loss = losses.mean
        z_hat = all_codes.sum(dim=0)
        recon = self._mlp(self.decoder, quantized)
        recon_loss = F.mse_loss(recon, s)
        zero = z.new_zeros(())
        cf_loss = zero
        if self.alpha > 0:
            if cf is None:
                raise ValueError("alpha > 0 needs the batch's CF embeddings (cf=...)")
            if shard is None:
                cf_loss = self.cf_loss_fn(self.cf_input(z, z_hat), cf)
            else:   # negatives: the CF embeddings of the whole global batch
                cf_loss = self.cf_loss_fn(self.cf_input(z, z_hat), shard.cf, positives=shard.positives(z.device))
        div_loss = zero
        if self.beta > 0:
            u = None if shard is None else shard.uniforms((self.num_levels,), generator, codes.device)
            positives = self.sample_same_cluster_codes(codes, generator, u=u)
            div_loss = self.diversity_loss(codes, positives)
        # codebook_loss is the mean over levels already (mse over [B, L, d])
        loss = recon_loss + codebook_loss + self.beta * div_loss + self.alpha * cf_loss
        if shard is not None:
            loss = loss * shard.weight
        return {"loss": loss, "recon": recon_loss.detach(), "codebook": codebook_loss.detach(),
                "cf": cf_loss.detach(), "diversity": div_loss.detach(), "codes": codes}

    def cf_input(self, z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """What ``L_CF`` is evaluated on: the value of ``z_hat``, its gradient routed by ``cf_gradient``.

        ``"encoder+codebooks"``: ``z_hat + (z - sg(z))``, the gradient reaches the codebooks (through ``z_hat``) and
        the encoder (straight through ``z``), so the CF signal both moves codes and moves items between codes.
        ``"encoder"``: ``sg(z_hat) + (z - sg(z))``, the encoder alone, as the reference code's straight-through
        latent. Both add an exact zero to ``z_hat``, so the loss value is the same bits in both settings.
        """
        straight_through = z - z.detach()
        if self.cf_gradient == "encoder":
            return z_hat.detach() + straight_through
        return z_hat + straight_through

    def settings(self) -> dict:
        """Constructor arguments, for checkpoints and reports."""
        return dict(
            input_dim=self.input_dim,
            hidden_dims=[m.out_features for m in self.encoder if isinstance(m, nn.Linear)][:-1],
            latent_dim=self.latent_dim, num_levels=self.num_levels, codebook_size=self.codebook_size,
            commitment=self.commitment, alpha=self.alpha, beta=self.beta, cf_temperature=self.cf_temperature,
            diversity_clusters=self.diversity_clusters, diversity_cluster_sizes=list(self.diversity_cluster_sizes),
            sinkhorn_last_level=self.sinkhorn_last_level, sinkhorn_epsilon=self.sinkhorn_epsilon,
            sinkhorn_iters=self.sinkhorn_iters, mlp_precision=self.mlp_precision, cf_gradient=self.cf_gradient,
            codebook_init=self.codebook_init, residual_chain=self.residual_chain,
        )
