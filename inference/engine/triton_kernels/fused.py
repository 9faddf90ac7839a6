"""The fused kernels the model calls on CUDA tensors (one import for model.py)."""

from .activation import silu_and_mul
from .norm import fused_add_rms_norm, rms_norm
from .qkv_rope_cache import qkv_rope_cache
from .skinny_linear import RowNorm, Summed, skinny_linear, skinny_linear_add, takes_norm
from .skinny_linear import supports as skinny

__all__ = ["RowNorm", "Summed", "fused_add_rms_norm", "qkv_rope_cache", "rms_norm",
           "silu_and_mul", "skinny", "skinny_linear", "skinny_linear_add", "takes_norm"]
