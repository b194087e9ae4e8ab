"""letter_fast: kernel-backed learnable item tokenization (LETTER) and generative recommendation.

The hot paths (residual quantization, contrastive losses, trie-constrained beam search) have a
plain PyTorch reference backend plus C++ (CPU), Triton and CUDA kernels; ``backend=`` or
``LETTER_FAST_BACKEND`` picks one, ``python -m letter_fast.info`` says which run here.
"""

__version__ = "0.1.0"

from letter_fast.ops import (
    BACKENDS,
    BackendUnavailable,
    codebook_diversity_loss,
    contrastive_loss,
    in_batch_contrastive_loss,
    residual_code_embeddings,
    residual_dequantize,
    residual_quantize,
)

__all__ = [
    "BACKENDS", "BackendUnavailable", "codebook_diversity_loss", "contrastive_loss", "in_batch_contrastive_loss",
    "residual_code_embeddings", "residual_dequantize", "residual_quantize", "__version__",
]
