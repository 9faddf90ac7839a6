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


_ALIGN = 16  # bytes: Triton compiles a kernel apart for a pointer that is not 16-byte aligned


class Staging:
    """Small host arrays of a step sent to the device in one non-blocking copy, each part
    landing 16-byte aligned in one device buffer.

    Why: a step's inputs are a handful of short integer arrays (ids, positions, slots, block
    tables...); one copy and no conversion kernel on the device is the least host work that
    moves them (vLLM's persistent pinned buffers). On CUDA the parts are written straight into
    a pinned buffer that is reused: `buffers` of them in turn, each waiting (on its event) for
    its previous copy to have left before it is written again; with the engine's loop that
    copy left steps ago. On the CPU each call packs a fresh array and the tensors returned
    view it, so nothing a caller keeps is ever overwritten.
    """

    def __init__(self, device: torch.device, buffers: int = 2) -> None:
        self.device = device
        self._pinned: list[torch.Tensor | None] = [None] * buffers
        self._arrays: list[np.ndarray | None] = [None] * buffers  # numpy views of `_pinned`
        self._events: list[torch.cuda.Event | None] = [None] * buffers
        self._turn = 0

    def send(self, parts: list[tuple[list[int] | np.ndarray, np.dtype]]) -> list[torch.Tensor]:
        """Each `(values, dtype)` part as a 1-D device tensor of that dtype (int32 or int64),
        in order. The copy is queued; nothing here waits for the GPU's queue."""
        cut, at = [], 0
        for values, dtype in parts:
            cut.append(at)
            at += -(-len(values) * dtype.itemsize // _ALIGN) * _ALIGN
        host = self._host(at)
        for (values, dtype), start in zip(parts, cut, strict=True):
            host[start : start + len(values) * dtype.itemsize].view(dtype)[:] = values
        buf = self._copy(host, at)
        return [buf[start : start + len(values) * dtype.itemsize].view(_TORCH[dtype])
                for (values, dtype), start in zip(parts, cut, strict=True)]

    def _host(self, nbytes: int) -> np.ndarray:
        if self.device.type != "cuda":
            return np.empty(nbytes, dtype=np.uint8)
        self._turn = turn = (self._turn + 1) % len(self._pinned)
        if (event := self._events[turn]) is not None:
            event.synchronize()  # its last copy has left (long since, in the engine's loop)
        array = self._arrays[turn]
        if array is None or len(array) < nbytes:
            size = max(nbytes, 2 * (0 if array is None else len(array)), 4096)
            pinned = self._pinned[turn] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
            array = self._arrays[turn] = pinned.numpy()
        return array

    def _copy(self, host: np.ndarray, nbytes: int) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.from_numpy(host)
        buf = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        buf.copy_(self._pinned[self._turn][:nbytes], non_blocking=True)
        event = self._events[self._turn]
        if event is None:
            event = self._events[self._turn] = torch.cuda.Event()
        event.record()
        return buf


I32, I64 = np.dtype(np.int32), np.dtype(np.int64)
_TORCH = {I32: torch.int32, I64: torch.int64}
