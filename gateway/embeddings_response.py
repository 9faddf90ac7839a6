"""The `/v1/embeddings` answer, in OpenAI's shape, from the chunks of an embedding request.

`{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": ...}], "model",
"usage": {"prompt_tokens", "total_tokens"}}`, one entry per input in input order. An
`embedding` is an array of numbers (`float`) or the base64 of its little-endian float32 bytes
(`base64`, what the official clients ask for by default and decode themselves). The JSON is
written by orjson straight from the float32 vectors: no Python float per value.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from kvmesh.wire import Chunk, UsageInfo


@dataclass
class EmbeddingsGather:
    """The vectors of one request, by input index, as their chunks arrive."""

    encoding_format: str
    vectors: dict[int, bytes] = field(default_factory=dict)
    usage: UsageInfo | None = None

    def add(self, chunk: Chunk) -> None:
        if chunk.embedding is not None:
            self.vectors[chunk.index] = chunk.embedding
        if chunk.usage is not None:
            self.usage = chunk.usage

    def body(self, model: str) -> bytes:
        """The answer as JSON bytes."""
        data = [{"object": "embedding", "index": i, "embedding": self._encode(v)}
                for i, v in sorted(self.vectors.items())]
        tokens = self.usage.prompt_tokens if self.usage is not None else 0
        out: dict[str, Any] = {"object": "list", "data": data, "model": model,
                               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)

    def _encode(self, raw: bytes) -> Any:
        if self.encoding_format == "base64":
            return base64.b64encode(raw).decode("ascii")
        return np.frombuffer(raw, dtype="<f4")
