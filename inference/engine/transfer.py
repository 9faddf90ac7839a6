"""Host <-> device copies that never make the host wait for the GPU's queue.

On CUDA, `tensor.to(device)` from pageable memory and `.tolist()` of a device tensor both wait
for every kernel queued before them; with the next step already launched, that is a whole step
of idle host. So the engine's per-step copies go through here:

- `to_device(values, dtype, device)`: small host data (a list, numpy array or CPU tensor) to
  the device
  through pinned memory, non-blocking. PyTorch's caching host allocator keeps the pinned block
  until the copy has run, so the caller may drop it at once.
- `HostCopy(tensors)`: non-blocking device-to-host copies into pinned memory and one event;
  `wait()` blocks until they landed, `ready()` says whether they have. On the CPU both are
  plain copies, always ready.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(values: list | np.ndarray | torch.Tensor, dtype: torch.dtype,
              device: torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        host = values.to(dtype)
    elif isinstance(values, np.ndarray):
        host = torch.from_numpy(values).to(dtype)
    else:
        host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """Device tensors on their way to the host (None entries stay None)."""

    def __init__(self, tensors: list[torch.Tensor | None]) -> None:
        self._host = [None if t is None else t.to("cpu", non_blocking=True) for t in tensors]
        self._ready: torch.cuda.Event | None = None
        if any(t is not None and t.is_cuda for t in tensors):
            self._ready = torch.cuda.Event()
            self._ready.record()

    def ready(self) -> bool:
        return self._ready is None or self._ready.query()

    def wait(self) -> list[torch.Tensor | None]:
        if self._ready is not None:
            self._ready.synchronize()
        return self._host
