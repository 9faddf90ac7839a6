"""The fused kernels the model calls on CUDA tensors (one import for model.py)."""

from .activation import silu_and_mul
from .norm import fused_add_rms_norm, rms_norm
from .qkv_rope_cache import qkv_rope_cache
from .skinny_linear import skinny_linear
from .skinny_linear import supports as skinny

__all__ = ["fused_add_rms_norm", "qkv_rope_cache", "rms_norm", "silu_and_mul", "skinny",
           "skinny_linear"]
