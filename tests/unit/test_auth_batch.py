"""Merkle batches of sids: against the recursive RFC 9162 definition, every proof of sizes 1..64, tampering, and the
batch exchange between threads."""

import hashlib
import socket
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mptcrypt.auth import (
    AuthenticationFailed,
    BatchSigner,
    MerkleTree,
    PeerRejected,
    ProtocolViolation,
    ServerTrust,
    client_verify_batch,
    client_verify_signature,
    leaf_hash,
    root_from_path,
    Scheme,
    send_not_protected,
    server_send_batch_proof,
    verify_batch_proof,
)
from mptcrypt.auth.signature import batch_message, verify
from mptcrypt.auth.wire import HEADER_LEN, BatchSignatureMsg

SIZES = (1, 2, 3, 7, 64)
# Roots of the trees over sids[i] = SHA-256(u32 i), computed once and pinned.
PINNED_ROOTS = {
    1: "965053f8e65891f8079863a0808b66d6dbba6e4ac34b710f797019ed633adf92",
    2: "0329eedd318e00f0d862e43c031519f04370dd3f8e97b38395752394fd3ca6ed",
    3: "b1782769b8906e20ab9b2648e93f64b15e98d20ebdc70e9d5dd2737378bfa0cd",
    7: "4660ee2bfd429ebc13c2d2c8f11e7945e9832d4ebbb2fecedde680066760adb7",
    64: "c7aa03d3508f2515f4e948970cce102818a93314e3e13bcb72a8e1dd32b01716",
}
KEY = ed25519.Ed25519PrivateKey.generate()
TRUST = ServerTrust(pinned_key=KEY.public_key())


def sids(n):
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


# --- reference: RFC 9162 2.1.1 and 2.1.3.1, written from the recursive definitions ---------------------------


def ref_mth(d):
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m, d):
    if len(d) == 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


@pytest.mark.parametrize("n", list(range(1, 34)) + [64, 100])
def test_tree_matches_the_recursive_definition(n) -> None:
    d = sids(n)
    tree = MerkleTree.from_sids(d)
    assert tree.root == ref_mth(d)
    for m in range(n):
        assert list(tree.inclusion_path(m)) == ref_path(m, d)
        assert root_from_path(leaf_hash(d[m]), m, n, tree.inclusion_path(m)) == tree.root


@pytest.mark.parametrize("n", SIZES)
def test_pinned_roots_and_every_proof(n) -> None:
    d = sids(n)
    signer = BatchSigner(KEY)
    assert [signer.add(s) for s in d] == list(range(n))
    proofs = signer.flush()
    assert len(signer) == 0 and signer.signatures == 1 and len(proofs) == n
    assert MerkleTree.from_sids(d).root.hex() == PINNED_ROOTS[n]
    assert len({p.signature for p in proofs}) == 1  # one signature for the whole batch
    for i, proof in enumerate(proofs):
        wire = BatchSignatureMsg.parse(proof.encode()[HEADER_LEN:])
        ident = verify_batch_proof(wire, d[i], TRUST)
        assert ident.batch == (n, i)
    verify(KEY.public_key(), proofs[0].alg, proofs[0].signature,
           b"mptcrypt sid batch v1" + n.to_bytes(4, "big") + bytes.fromhex(PINNED_ROOTS[n]))


@pytest.mark.parametrize("n", SIZES)
def test_tampered_proofs(n) -> None:
    d = sids(n)
    signer = BatchSigner(KEY)
    for s in d:
        signer.add(s)
    proofs = signer.flush()
    assert len(proofs) == n
    i = n // 2
    p = proofs[i]
    other_sid = hashlib.sha256(b"not in the batch").digest()
    bad = {
        "another sid": (p, other_sid),
        "neighbour's sid": (p, d[(i + 1) % n]) if n > 1 else (p, other_sid),
        "index out of range": (BatchSignatureMsg(p.alg, p.signature, n, n, p.path), d[i]),
        "size changed": (BatchSignatureMsg(p.alg, p.signature, n + 1, i, p.path), d[i]),
        "extra hash": (BatchSignatureMsg(p.alg, p.signature, n, i, p.path + (bytes(32),)), d[i]),
        "signature of another batch": (BatchSignatureMsg(
            p.alg, KEY.sign(batch_message(n, bytes(32))), n, i, p.path), d[i]),
    }
    if p.path:
        flipped = bytearray(p.path[0])
        flipped[0] ^= 0x80
        bad["flipped bit"] = (BatchSignatureMsg(p.alg, p.signature, n, i, (bytes(flipped),) + p.path[1:]), d[i])
        bad["truncated path"] = (BatchSignatureMsg(p.alg, p.signature, n, i, p.path[:-1]), d[i])
        bad["reordered path"] = (BatchSignatureMsg(p.alg, p.signature, n, i, p.path[::-1]), d[i])
    assert verify_batch_proof(p, d[i], TRUST).batch == (n, i)  # the untampered proof verifies
    refused = []
    for what, (msg, sid) in bad.items():
        if what == "reordered path" and len(set(msg.path)) < 2:
            continue
        with pytest.raises(AuthenticationFailed):
            verify_batch_proof(msg, sid, TRUST)
            pytest.fail(f"{what}: accepted")  # reached only if verification did not raise
        refused.append(what)
    assert len(refused) == (6 if n == 1 else 8 if n == 2 else 9)  # every tampering tried (the path ones need a path)


def test_proof_with_wrong_key_and_single_signature_is_not_a_batch_signature() -> None:
    signer = BatchSigner(KEY)
    signer.add(sids(1)[0])
    (p,) = signer.flush()
    with pytest.raises(AuthenticationFailed):
        verify_batch_proof(p, sids(1)[0], ServerTrust(pinned_key=ed25519.Ed25519PrivateKey.generate().public_key()))
    # a signature over "mptcrypt sid signature v1" | sid does not pass as a batch of one
    from mptcrypt.auth import sign_sid

    single = sign_sid(KEY, sids(1)[0])
    with pytest.raises(AuthenticationFailed):
        verify_batch_proof(BatchSignatureMsg(single.alg, single.signature, 1, 0, ()), sids(1)[0], TRUST)


def test_root_from_path_edge_cases() -> None:
    leaf = leaf_hash(sids(1)[0])
    assert root_from_path(leaf, 0, 1, ()) == leaf
    assert root_from_path(leaf, 0, 0, ()) is None
    assert root_from_path(leaf, 0, 2, ()) is None  # too short
    assert root_from_path(leaf, 0, 1, (bytes(32),)) is None  # too long
    assert root_from_path(leaf, 0, 2, (bytes(31),)) is None  # not a hash
    assert root_from_path(leaf, -1, 2, (bytes(32),)) is None


def test_signer_limits() -> None:
    signer = BatchSigner(KEY, max_size=2)
    assert signer.flush() == [] and signer.signatures == 0
    signer.add(bytes(32))
    signer.add(bytes(32))
    assert signer.full
    with pytest.raises(OverflowError):
        signer.add(bytes(32))
    with pytest.raises(ValueError):
        signer.add(bytes(31))
    assert len(signer.flush()) == 2 and not signer.full
    with pytest.raises(TypeError):
        BatchSigner(ec.generate_private_key(ec.SECP521R1()))


def test_duplicate_sids_get_their_own_proofs() -> None:
    signer = BatchSigner(KEY)
    s = sids(1)[0]
    assert [signer.add(s), signer.add(s)] == [0, 1]
    proofs = signer.flush()
    assert len(proofs) == 2 and signer.signatures == 1
    assert [verify_batch_proof(p, s, TRUST).batch for p in proofs] == [(2, 0), (2, 1)]


# --- one server, many clients, over socketpairs -------------------------------------------------------------


def test_many_clients_one_signature() -> None:
    n = 7
    pairs = [socket.socketpair() for _ in range(n)]
    d = sids(n)
    results = [None] * n

    def client(i):
        try:
            results[i] = client_verify_batch(pairs[i][0], pinned_key=KEY.public_key(), sid=d[i], timeout=5)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    signer = BatchSigner(KEY)
    waiting = [(signer.add(d[i]), pairs[i][1]) for i in range(n)]
    for (_, conn), proof in zip(waiting, signer.flush(), strict=True):
        server_send_batch_proof(conn, proof)
    for t in threads:
        t.join(5)
    assert [r.batch for r in results] == [(n, i) for i in range(n)]
    assert signer.signatures == 1


def test_batch_client_with_swapped_sid_and_tampered_proof_message() -> None:
    d = sids(3)
    signer = BatchSigner(KEY)
    for s in d:
        signer.add(s)
    proofs = signer.flush()
    c, s = socket.socketpair()
    server_send_batch_proof(s, proofs[1])
    with pytest.raises(AuthenticationFailed):
        client_verify_signature(c, pinned_key=KEY.public_key(), sid=d[2])  # a MITM's sid: not in the batch
    frame = bytearray(proofs[1].encode())
    frame[-2] ^= 1  # last byte of the path
    s.sendall(bytes(frame))
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        client_verify_batch(c, pinned_key=KEY.public_key(), sid=d[1])
    s.sendall(proofs[1].encode()[:-5])
    s.shutdown(socket.SHUT_WR)
    with pytest.raises(AuthenticationFailed, match="closed"):
        client_verify_batch(c, pinned_key=KEY.public_key(), sid=d[1])


def test_batch_only_client_refuses_a_single_signature_and_hears_not_protected() -> None:
    from mptcrypt.auth import server_sign_auth

    c, s = socket.socketpair()
    server_sign_auth(s, KEY, sid=sids(1)[0])
    with pytest.raises(ProtocolViolation, match="unexpected SIGNATURE"):
        client_verify_batch(c, pinned_key=KEY.public_key(), sid=sids(1)[0])
    c, s = socket.socketpair()
    send_not_protected(s, Scheme.BATCH)
    with pytest.raises(PeerRejected):
        client_verify_batch(c, pinned_key=KEY.public_key(), sid=sids(1)[0])
