"""Triton kernels for the CUDA path of the engine, one kernel (family) per file.

Importing this package needs `triton`, which only CUDA builds of PyTorch bring: the engine
imports it lazily, on CUDA only, so the CPU path (and CI) never touches it.

- `kv_write.reshape_and_cache`: write a step's new K/V into the paged pool.
- `decode_attention.decode_attention`: one query token per sequence over its block table,
  split-K (flash-decoding), all query heads of a KV head in one program.
- `prefill_attention.prefill_attention`: varlen causal attention of new tokens over a cached
  prefix, reading every key (prefix and new) from the pool.
- `paged_tile.attend_tile`: the online-softmax step over one tile of paged keys and values,
  which both attention kernels inline.
- `norm.rms_norm`, `norm.fused_add_rms_norm`, `activation.silu_and_mul`: the cheap fusions
  on the model's hot path.
- `rope_cache.rope_and_cache`: RoPE and the KV write in one kernel (the Triton backend's
  write where the QKV kernel does not write the pool: steps of more than a small batch, and
  Qwen3); `rope.apply_rope` is RoPE alone, its tested reference, with the rotation all three
  share.
- `skinny_linear.skinny_linear`: the projections of a batch of up to 16 rows (cuBLAS
  beyond), with SiLU·mul fused into the down projection at one row; `skinny_linear_add`
  adds the residual and leaves the sums of squares by which the next projection applies
  an RMSNorm itself (`RowNorm`, where `takes_norm`).
- `qkv_rope_cache.qkv_rope_cache`: a small batch's QKV projection (the skinny kernel's loop)
  that rotates q and k and writes k and v to the pool itself.
- `gumbel_sample.gumbel_sample`: temperature sampling in one read of the logits (Gumbel-max),
  the sampler's CUDA path for rows without top-k, top-p or a seed of their own.
- `pdl`: programmatic dependent launch on Hopper. The decode step's kernels (norms,
  SiLU·mul, skinny projections, QKV + RoPE + KV write, RoPE + KV write, decode attention)
  launch with `pdl.options` and call `pdl.begin` before touching memory (the projections
  fetch their weights first); prefill attention, the plain KV write and RoPE alone launch
  plainly.
"""
