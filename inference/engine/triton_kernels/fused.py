"""The fused kernels the model calls on CUDA tensors (one import for model.py)."""

from .activation import silu_and_mul
from .norm import fused_add_rms_norm, rms_norm
from .skinny_linear import skinny_linear
from .skinny_linear import supports as skinny

__all__ = ["fused_add_rms_norm", "rms_norm", "silu_and_mul", "skinny", "skinny_linear"]
