"""`POST /v1/embeddings` bodies validated into an `EmbeddingsRequest`.

Fields, as OpenAI's: `model`; `input`: a string, an array of strings, an array of token ids,
or an array of arrays of token ids (1 to `MAX_INPUTS` inputs, none empty); `encoding_format`:
`float` (the default) or `base64` (little-endian float32 bytes); `dimensions`: a positive
integer (the worker refuses one over the model's hidden size); `user`: a string (a session
hint, as on generations); vLLM's `truncate_prompt_tokens`: keep each input's last tokens (the
router cuts them). Which fields exist and their JSON types is gateway/api_fields.py's
registry (`EMBEDDINGS_FIELDS`), checked first: every other field, and every value of the wrong
type, is a 400 naming the field (`param`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.api_fields import EMBEDDINGS_FIELDS, check_fields
from gateway.errors import bad_field
from gateway.field_values import prompt_tail
from gateway.json_body import json_object
from kvmesh.wire import EmbedRequest

MAX_INPUTS = 2048  # OpenAI's cap on inputs per request
TOKEN_LIMIT = 1 << 31  # token ids travel as int64; no vocabulary is near this


@dataclass
class EmbeddingsRequest:
    """A validated embeddings request. Exactly one of `texts` and `token_ids` is set."""

    model: str
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    encoding_format: str = "float"
    dimensions: int | None = None
    session: str = ""  # the `user` field (or the x-kvmesh-session header)
    # set from the caller's key by auth (gateway/auth_client.py), as on a generation
    tenant: str = ""
    scope: str = ""  # set by auth, as a generation's (gateway/openai_request.py)
    key_id: str = ""
    priority: int = 0
    cache_salt: str = ""
    truncate_prompt_tokens: int | None = None  # vLLM's: keep each input's last tokens
    # what the tenant's token reservation reads (gateway/admission.py): no completion
    n: int = 1
    max_tokens: int = 0
    messages: None = None
    prompts: None = None  # not a completions batch

    @property
    def size(self) -> int:
        """How many inputs."""
        return len(self.texts if self.texts is not None else self.token_ids or [])

    @property
    def prompt(self) -> str | None:
        return None if self.texts is None else "".join(self.texts)

    @property
    def prompt_token_ids(self) -> list[int] | None:
        return None if self.token_ids is None else [t for ids in self.token_ids for t in ids]

    def to_wire(self, request_id: str, reply_to: str) -> EmbedRequest:
        return EmbedRequest(request_id, self.model, reply_to, inputs=self.texts,
                            input_token_ids=self.token_ids, dimensions=self.dimensions,
                            tenant=self.tenant, session=self.session, priority=self.priority,
                            cache_salt=self.cache_salt,
                            truncate_prompt_tokens=self.truncate_prompt_tokens)


def parse_embeddings(body: Any) -> EmbeddingsRequest:
    body = json_object(body)
    check_fields(body, EMBEDDINGS_FIELDS)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_field("model", "required, a non-empty string")
    req = EmbeddingsRequest(model)
    req.texts, req.token_ids = _inputs(body.get("input"))
    req.encoding_format = body.get("encoding_format") or "float"
    dims = body.get("dimensions")
    if dims is not None:
        if not 1 <= dims < TOKEN_LIMIT:
            raise bad_field("dimensions", "must be a positive integer")
        req.dimensions = dims
    req.session = body.get("user") or ""
    req.truncate_prompt_tokens = prompt_tail(body)
    return req


def _inputs(raw: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """(texts, token id lists): one of them set, as `input` says."""
    if raw is None:
        raise bad_field("input", "required")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise bad_field("input", "must be a non-empty string or a non-empty array of strings, "
                        "of token ids, or of arrays of token ids")
    if all(_is_token(t) for t in raw):
        raw = [raw]  # one input given as token ids
    if len(raw) > MAX_INPUTS:
        raise bad_field("input", f"at most {MAX_INPUTS} inputs per request, got {len(raw)}")
    if all(isinstance(t, str) for t in raw):
        if not all(raw):
            raise bad_field("input", "an input must not be empty")
        return raw, None
    if all(isinstance(ids, list) and ids and all(_is_token(t) for t in ids) for ids in raw):
        return None, raw
    raise bad_field("input", "must be strings, or arrays of non-negative token ids (non-empty), "
                    "not a mix")


def _is_token(t: Any) -> bool:
    return type(t) is int and 0 <= t < TOKEN_LIMIT
