"""Settings of ``letter-fast tokenize`` (model + training), one dataclass; the shipped TOML file
letter_fast/configs/tokenizer.toml repeats every key with a comment."""

from __future__ import annotations

from dataclasses import dataclass, field

from letter_fast.tokenizer.train import TokenizerTrainConfig

# alpha (CF weight), beta (diversity weight) of the paper's variants (LETTER Table 3 / Sec. 4.3).
VARIANTS = {
    "rqvae": (0.0, 0.0),      # TIGER's plain RQ-VAE
    "cf": (0.02, 0.0),        # + collaborative regularization
    "diversity": (0.0, 1e-4),  # + diversity regularization
    "letter": (0.02, 1e-4),   # both: LETTER
}


@dataclass
class TokenizeConfig:
    variant: str = field(default="letter", metadata={"help": "rqvae | cf | diversity | letter: presets of alpha/beta"})
    alpha: float = field(default=-1.0, metadata={"help": "CF loss weight (negative: the variant's preset)"})
    beta: float = field(default=-1.0, metadata={"help": "diversity loss weight (negative: the variant's preset)"})
    hidden_dims: tuple[int, ...] = field(default=(512, 256, 128, 64), metadata={"help": "MLP encoder widths"})
    latent_dim: int = field(default=32, metadata={"help": "latent width d (= CF embedding width)"})
    num_levels: int = field(default=4, metadata={"help": "identifier length L"})
    codebook_size: int = field(default=256, metadata={"help": "codes per level N"})
    commitment: float = field(default=0.25, metadata={"help": "commitment weight mu"})
    cf_temperature: float = field(default=1.0, metadata={"help": "temperature of the CF InfoNCE"})
    diversity_clusters: int = field(default=10, metadata={"help": "K clusters of codes per codebook"})
    diversity_min_size: int = field(default=10, metadata={"help": "smallest cluster of codes"})
    diversity_max_size: int = field(default=60, metadata={"help": "largest cluster of codes"})
    sinkhorn_last_level: bool = field(default=True, metadata={"help": "balanced (Sinkhorn) last level in training"})
    sinkhorn_epsilon: float = field(default=0.003, metadata={"help": "Sinkhorn entropy weight"})
    sinkhorn_iters: int = field(default=50, metadata={"help": "Sinkhorn iterations"})
    mlp_precision: str = field(default="fp32", metadata={
        "help": "fp32 | bf16: encoder/decoder matmuls in training under bfloat16 autocast (quantization and losses "
                "stay float32)"})
    epochs: int = field(default=200, metadata={"help": "training epochs"})
    batch_size: int = field(default=1024, metadata={"help": "items per step"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    eval_every: int = field(default=10, metadata={"help": "epochs between collision-rate evaluations"})
    checkpoint_every: int = field(default=50, metadata={"help": "epochs between resumable checkpoints"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def check(self) -> "TokenizeConfig":
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        return self

    def weights(self) -> tuple[float, float]:
        alpha, beta = VARIANTS[self.variant]
        return (self.alpha if self.alpha >= 0 else alpha), (self.beta if self.beta >= 0 else beta)

    def model_settings(self) -> dict:
        alpha, beta = self.weights()
        return dict(hidden_dims=tuple(self.hidden_dims), latent_dim=self.latent_dim, num_levels=self.num_levels,
                    codebook_size=self.codebook_size, commitment=self.commitment, alpha=alpha, beta=beta,
                    cf_temperature=self.cf_temperature, diversity_clusters=self.diversity_clusters,
                    diversity_cluster_sizes=(self.diversity_min_size, self.diversity_max_size),
                    sinkhorn_last_level=self.sinkhorn_last_level, sinkhorn_epsilon=self.sinkhorn_epsilon,
                    sinkhorn_iters=self.sinkhorn_iters, mlp_precision=self.mlp_precision)

    def train_config(self, progress: bool = True) -> TokenizerTrainConfig:
        return TokenizerTrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                    weight_decay=self.weight_decay, eval_every=self.eval_every,
                                    checkpoint_every=self.checkpoint_every, seed=self.seed, device=self.device,
                                    progress=progress)
