"""Chained hashes of full KV blocks: the one definition the engine and the router share.

A block's key is hash(parent key, the block's token ids), so equal keys mean equal prefixes,
not just equal blocks. Keys are 63-bit ints from blake2b: stable across processes and machines
(Python's hash() is not), and small enough for msgpack.

The chain starts at `root_hash(cache_salt)`: requests with different salts never share a key,
so a cached prefix is only ever found by requests with the same salt. The gateway sets the salt
per tenant (a tenant's own, or a group that tenants opt into), so no tenant can detect another's
prompts through `cached_tokens`, routing or time to first token. The empty salt is the
unsalted chain (`ROOT_HASH`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from hashlib import blake2b
from typing import NewType

BlockHash = NewType("BlockHash", int)

ROOT_HASH = BlockHash(0)


def root_hash(cache_salt: str = "") -> BlockHash:
    """The chain's first parent for requests salted with `cache_salt` ("" = `ROOT_HASH`)."""
    if not cache_salt:
        return ROOT_HASH
    digest = blake2b(cache_salt.encode(), digest_size=8, person=b"kvmesh-salt").digest()
    return BlockHash(int.from_bytes(digest, "little") >> 1)


def hash_block(parent: BlockHash, token_ids: Sequence[int]) -> BlockHash:
    """Key of one full block whose prefix (all earlier blocks) has key `parent`."""
    h = blake2b(parent.to_bytes(8, "little"), digest_size=8)
    h.update(array("q", token_ids).tobytes())
    return BlockHash(int.from_bytes(h.digest(), "little") >> 1)


def hash_prefix_blocks(token_ids: Sequence[int], block_size: int,
                       cache_salt: str = "") -> list[BlockHash]:
    """Keys of every full block of `token_ids` salted with `cache_salt`, in order; a trailing
    partial block has none."""
    keys: list[BlockHash] = []
    parent = root_hash(cache_salt)
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block(parent, token_ids[start : start + block_size])
        keys.append(parent)
    return keys
