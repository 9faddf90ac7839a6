"""Chained hashes of full KV blocks: the one definition the engine and the router share.

A block's key is hash(parent key, the block's token ids), so equal keys mean equal prefixes,
not just equal blocks. Keys are 63-bit ints from blake2b: stable across processes and machines
(Python's hash() is not), and small enough for msgpack.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from hashlib import blake2b
from typing import NewType

BlockHash = NewType("BlockHash", int)

ROOT_HASH = BlockHash(0)


def hash_block(parent: BlockHash, token_ids: Sequence[int]) -> BlockHash:
    """Key of one full block whose prefix (all earlier blocks) has key `parent`."""
    h = blake2b(parent.to_bytes(8, "little"), digest_size=8)
    h.update(array("q", token_ids).tobytes())
    return BlockHash(int.from_bytes(h.digest(), "little") >> 1)


def hash_prefix_blocks(token_ids: Sequence[int], block_size: int) -> list[BlockHash]:
    """Keys of every full block of `token_ids`, in order; a trailing partial block has none."""
    keys: list[BlockHash] = []
    parent = ROOT_HASH
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block(parent, token_ids[start : start + block_size])
        keys.append(parent)
    return keys
