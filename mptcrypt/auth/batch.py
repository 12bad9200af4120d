"""Batch signing (seed: "sign a batch of session IDs and send the batch and sig to many clients").

Sans-IO: the caller decides when to flush (pending count, age of the oldest sid: its own clock), BatchSigner only
collects sids and, on flush(), builds the Merkle tree, signs its root once and hands back one proof per sid:

    signer = BatchSigner(key)
    i = signer.add(sid_of_conn)          # per accepted connection; remember (i, conn)
    if len(signer) >= 64 or oldest_age >= 0.005:
        for (i, conn), proof in zip(waiting, signer.flush()):
            conn.sendall(proof.encode())   # or mptcrypt.auth.server_send_batch_proof(conn, proof)
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from mptcrypt.auth.merkle import MAX_TREE_SIZE, MerkleTree
from mptcrypt.auth.signature import PrivateKey, batch_message, chain_der, sig_alg_for, sign
from mptcrypt.auth.wire import SID_LEN, BatchSignatureMsg

BatchProof = BatchSignatureMsg  # what a client receives: root signature + inclusion proof (+ certificate chain)
DEFAULT_MAX_BATCH = 1 << 16


class BatchSigner:
    """Collects pending sids; flush() signs them all with one signature. Not thread-safe: one owner (or a lock)."""

    def __init__(self, private_key: PrivateKey, *, certificate_chain: Sequence[x509.Certificate] | None = None,
                 max_size: int = DEFAULT_MAX_BATCH) -> None:
        sig_alg_for(private_key)  # TypeError now rather than at the first flush
        if not 1 <= max_size < MAX_TREE_SIZE:
            raise ValueError(f"max_size must be 1..{MAX_TREE_SIZE - 1}")
        self._key = private_key
        self._chain = chain_der(private_key, certificate_chain)
        self._pending: list[bytes] = []
        self.max_size = max_size
        self.signatures = 0  # signatures made so far (one per non-empty flush)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_size

    def add(self, sid: bytes) -> int:
        """Queue a session ID; returns its position, which is its proof's index in the next flush()."""
        if len(sid) != SID_LEN:
            raise ValueError(f"a session ID is {SID_LEN} bytes, got {len(sid)}")
        if self.full:
            raise OverflowError(f"batch is full ({self.max_size} sids): flush() first")
        self._pending.append(bytes(sid))
        return len(self._pending) - 1

    def flush(self) -> list[BatchProof]:
        """Sign the pending batch: one proof per added sid, in the order of add(). Empty batch: no signature, []."""
        sids, self._pending = self._pending, []
        if not sids:
            return []
        tree = MerkleTree.from_sids(sids)
        alg, sig = sign(self._key, batch_message(tree.size, tree.root))
        self.signatures += 1
        return [BatchProof(alg, sig, tree.size, i, tree.inclusion_path(i), self._chain) for i in range(tree.size)]
