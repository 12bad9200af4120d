"""Merkle tree over a batch of session IDs: RFC 9162 section 2.1 (Certificate Transparency 2.0) with SHA-256.

    leaf hash  = SHA-256(0x00 | sid)
    node hash  = SHA-256(0x01 | left | right)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

Built bottom-up: at each level nodes are paired left to right and a last unpaired node moves up unchanged, which
gives the same tree as the recursive definition. Inclusion proofs and their verification are RFC 9162 2.1.3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mptcrypt.auth.wire import HASH_LEN, MAX_PATH_LEN

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
MAX_TREE_SIZE = 1 << MAX_PATH_LEN  # tree_size is a u32 on the wire: 2**32 - 1 leaves at most


def leaf_hash(sid: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + sid).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class MerkleTree:
    """All levels of the tree, kept to hand out every leaf's inclusion path in O(log n)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not leaf_hashes:
            raise ValueError("a Merkle tree needs at least one leaf")
        if len(leaf_hashes) >= MAX_TREE_SIZE:
            raise ValueError(f"at most {MAX_TREE_SIZE - 1} leaves")
        levels = [list(leaf_hashes)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                above.append(below[-1])  # promoted unchanged, not duplicated
            levels.append(above)
        self._levels = levels

    @classmethod
    def from_sids(cls, sids: Sequence[bytes]) -> MerkleTree:
        return cls([leaf_hash(s) for s in sids])

    @property
    def size(self) -> int:
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        return self._levels[-1][0]

    def inclusion_path(self, index: int) -> tuple[bytes, ...]:
        """Sibling hashes from the leaf up (a promoted node has no sibling at that level)."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf {index} of a tree of {self.size}")
        path = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        return tuple(path)


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2: the root that `path` leads to from `leaf` at `index` in a tree of `size`, or None when the
    path cannot belong to such a tree (index out of range, path too short or too long, a hash of the wrong size)."""
    if not 0 <= index < size or size >= MAX_TREE_SIZE or len(leaf) != HASH_LEN:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0 or len(p) != HASH_LEN:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
