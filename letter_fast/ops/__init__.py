"""Tensor ops with interchangeable backends (see :mod:`letter_fast.ops.backends`)."""

from letter_fast.ops.backends import BACKENDS, BackendUnavailable
from letter_fast.ops.residual_quantize import residual_quantize, rq_code_embeddings, rq_decode

__all__ = ["BACKENDS", "BackendUnavailable", "residual_quantize", "rq_code_embeddings", "rq_decode"]
