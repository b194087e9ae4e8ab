"""Modules for other projects, on top of the ops (kernel -> registered op -> functional -> module).

* :class:`ResidualQuantizer`: residual vector quantization (RQ-VAE) with the straight-through estimator,
  codebook and commitment losses, k-means initialization, EMA codebook updates and dead-code resets;
  a drop-in for vector-quantize-pytorch's ``ResidualVQ``.
* :class:`InBatchContrastiveLoss`, :class:`CodebookDiversityLoss`: LETTER's collaborative and diversity
  regularizers.
* :func:`kmeans`, :func:`kmeans_plus_plus`, :func:`squared_distances`: the k-means used for initialization.
"""

from letter_fast.nn.contrastive_loss import CodebookDiversityLoss, InBatchContrastiveLoss
from letter_fast.nn.kmeans import kmeans, kmeans_plus_plus, squared_distances
from letter_fast.nn.residual_quantizer import QuantizerLosses, ResidualQuantizer

__all__ = [
    "CodebookDiversityLoss", "InBatchContrastiveLoss", "QuantizerLosses", "ResidualQuantizer", "kmeans",
    "kmeans_plus_plus", "squared_distances",
]
