"""Weight-only 4-bit linears for the CPU path (`EngineConfig.quantization = "int4"`).

Decoding on a CPU streams every weight from memory once per step, so bytes per weight set the
speed. Each row is cut into groups of 32 input weights; a group keeps its min and step, and
each weight a 4-bit code: w = min + step * q, q in 0..15. PyTorch's CPU kernel stores that as
w = (q - 8) * scale + zero, so zero = min + 8 * step. A GGUF Q4_1 tensor (the default model's
format, the same grouping) comes back exactly, up to bfloat16 rounding of min and step.
The LM head stays in the model's dtype: it is tied to the embedding, kept at 8 bits in the GGUF.
"""

from __future__ import annotations

import torch
from torch import nn

GROUP = 32


class Int4Linear(nn.Module):
    def __init__(self, linear: nn.Linear, group: int = GROUP):
        super().__init__()
        w = linear.weight.detach().float().cpu()
        n, k = w.shape
        if k % group:
            raise ValueError(f"int4: input size {k} is not a multiple of the group size {group}")
        groups = w.view(n, k // group, group)
        lo, hi = groups.amin(-1), groups.amax(-1)
        step = ((hi - lo) / 15).clamp_min(1e-12)
        codes = ((groups - lo[..., None]) / step[..., None]).round().clamp(0, 15)
        codes = codes.to(torch.int32).view(n, k)
        self.group = group
        self.out_features = n
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        scales_zeros = torch.stack([step.t(), (lo + 8 * step).t()], dim=-1)
        self.register_buffer("scales_zeros", scales_zeros.to(torch.bfloat16).contiguous())
        # A Qwen2 q/k/v bias stays in the model's dtype: it is tiny and added after the matmul.
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat, self.packed, self.group, self.scales_zeros
        )
        out = y.view(*x.shape[:-1], self.out_features).to(x.dtype)
        return out if self.bias is None else out + self.bias


_QUANTIZED = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def quantize_int4(model: nn.Module) -> int:
    """Swap every decoder-layer projection for an `Int4Linear`; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name in _QUANTIZED:
            child = getattr(parent, name, None)
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int4Linear(child))
                swapped += 1
    return swapped
