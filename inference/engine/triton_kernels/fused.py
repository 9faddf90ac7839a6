"""The fused element-wise kernels the model calls on CUDA tensors (one import for model.py)."""

from .activation import silu_and_mul
from .norm import fused_add_rms_norm, rms_norm

__all__ = ["fused_add_rms_norm", "rms_norm", "silu_and_mul"]
