"""Settings of the LETTER tokenizer, each declared once, in three field groups:

* :class:`TokenizerVariantConfig`: the paper's variant and its loss weights alpha (CF) and beta (diversity);
* :class:`TokenizerModelConfig`: the shape of :class:`~letter_fast.tokenizer.model.LetterTokenizer` and its losses;
* :class:`~letter_fast.tokenizer.train.TokenizerTrainConfig`: the training loop.

:class:`TokenizeConfig` (all of ``letter-fast tokenize``) inherits the three; letter_fast/configs/tokenizer.toml is
its rendering (:mod:`letter_fast.config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from letter_fast.config import setting, subconfig
from letter_fast.tokenizer.model import CF_GRADIENTS, CODEBOOK_INITS, RESIDUAL_CHAINS
from letter_fast.tokenizer.train import TokenizerTrainConfig

# alpha (CF weight), beta (diversity weight) of the paper's variants (LETTER Table 3 / Sec. 4.3).
VARIANTS = {
    "rqvae": (0.0, 0.0),      # TIGER's plain RQ-VAE
    "cf": (0.02, 0.0),        # + collaborative regularization
    "diversity": (0.0, 1e-4),  # + diversity regularization
    "letter": (0.02, 1e-4),   # both: LETTER
}


@dataclass
class TokenizerVariantConfig:
    """Variant: rqvae (TIGER's plain RQ-VAE) | cf | diversity | letter (both regularizers)."""

    variant: str = setting("letter", "rqvae | cf | diversity | letter: presets of alpha/beta")
    alpha: float = setting(-1.0, "CF InfoNCE weight alpha; negative = the variant's preset (0.02 for cf/letter; "
                                 "paper: 0.01-0.02 on Instruments)")
    beta: float = setting(-1.0, "diversity loss weight beta; negative = the variant's preset (1e-4 for "
                                "diversity/letter)")

    def weights(self) -> tuple[float, float]:
        """``(alpha, beta)``: the explicit weights, or the variant's presets where they are negative."""
        alpha, beta = VARIANTS[self.variant]
        return (self.alpha if self.alpha >= 0 else alpha), (self.beta if self.beta >= 0 else beta)


@dataclass
class TokenizerModelConfig:
    """Model: the RQ-VAE's shape and losses (LetterTokenizer's constructor arguments)."""

    hidden_dims: tuple[int, ...] = setting((512, 256, 128, 64), "MLP encoder widths between the input embedding "
                                                                "and the latent (the decoder mirrors them)")
    latent_dim: int = setting(32, "latent width d; must equal the CF embedding width (32 for the papers' SASRec)")
    num_levels: int = setting(4, "identifier length L (levels of residual quantization)")
    codebook_size: int = setting(256, "codes per level N")
    commitment: float = setting(0.25, "commitment weight mu of the RQ-VAE loss")
    cf_temperature: float = setting(1.0, "temperature of the CF InfoNCE (the reference code uses 1, no "
                                         "normalization)")
    cf_gradient: str = setting("encoder", "where the CF loss's gradient goes: encoder (the reference code's: "
                                          "the straight-through latent, to the encoder only; the codebooks get "
                                          "none from L_CF) | encoder+codebooks (the codebooks through the "
                                          "quantized latent, the encoder straight through)")
    codebook_init: str = setting("kmeans", "how the codebooks start: kmeans (k-means++ and 25 Lloyd iterations on "
                                           "the encoded items, level by level on the residuals) | "
                                            "constrained-kmeans (the reference code's: every code starts with "
                                            "min(n // 512, 50) to 4x that many of the n items, raised to what "
                                            "fits, e.g. 8..32 of 4,344 items, exactly 256 of a 65,536 sample)")
    residual_chain: str = setting("stopped", "the residual chain's gradient: stopped (r_l = r_{l-1} - sg(e_l): "
                                             "every level's commitment reaches the encoder) | straight-through "
                                              "(the reference code's r_l = r_{l-1} - (r_{l-1} + sg(e_l - "
                                              "r_{l-1})): only level 1's commitment reaches the encoder)")
    diversity_clusters: int = setting(10, "diversity: each codebook's codes are grouped every epoch into this many "
                                          "clusters K")
    diversity_min_size: int = setting(10, "smallest cluster of codes")
    diversity_max_size: int = setting(60, "largest cluster of codes")
    sinkhorn_last_level: bool = setting(True, "balanced (Sinkhorn) assignment of the last level during training "
                                              "(nearest code at inference)")
    sinkhorn_epsilon: float = setting(0.003, "Sinkhorn entropy weight on distances rescaled to [0, 1]")
    sinkhorn_iters: int = setting(50, "Sinkhorn iterations")
    mlp_precision: str = setting("fp32", "fp32 | bf16: the encoder/decoder matmuls in training under bfloat16 "
                                         "autocast (AMX on recent Xeons, tensor cores on GPUs); quantization and "
                                         "all losses stay float32")

    def model_kwargs(self, alpha: float, beta: float) -> dict:
        """LetterTokenizer's keyword arguments (all but ``input_dim``), with the loss weights ``alpha``, ``beta``."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(TokenizerModelConfig)}
        kwargs["hidden_dims"] = tuple(kwargs["hidden_dims"])
        kwargs["diversity_cluster_sizes"] = (kwargs.pop("diversity_min_size"), kwargs.pop("diversity_max_size"))
        return dict(kwargs, alpha=alpha, beta=beta)


@dataclass
class TokenizeConfig(TokenizerTrainConfig, TokenizerModelConfig, TokenizerVariantConfig):
    """The LETTER tokenizer (RQ-VAE + CF and diversity regularization): variant, model and training settings."""

    def check(self) -> TokenizeConfig:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.cf_gradient not in CF_GRADIENTS:
            raise ValueError(f"cf_gradient must be one of {', '.join(CF_GRADIENTS)}, got {self.cf_gradient!r}")
        if self.codebook_init not in CODEBOOK_INITS:
            raise ValueError(f"codebook_init must be one of {', '.join(CODEBOOK_INITS)}, got {self.codebook_init!r}")
        if self.residual_chain not in RESIDUAL_CHAINS:
            raise ValueError(f"residual_chain must be one of {', '.join(RESIDUAL_CHAINS)}, "
                             f"got {self.residual_chain!r}")
        return self

    def model_settings(self) -> dict:
        """LetterTokenizer's keyword arguments (all but ``input_dim``) for this variant."""
        return self.model_kwargs(*self.weights())

    def train_config(self, progress: bool | None = None) -> TokenizerTrainConfig:
        """The training-loop group alone (``progress`` overrides the setting when given)."""
        cfg = subconfig(self, TokenizerTrainConfig)
        return dataclasses.replace(cfg, progress=progress) if progress is not None else cfg
