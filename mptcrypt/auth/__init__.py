"""Authentication on mptcrypt session IDs (docs/auth.md).

The daemons on both hosts derive the same session ID (sid) iff nobody sits in the middle of the key exchange.
These schemes bind a proof to the sid, so a man in the middle, who has two different sessions, cannot pass them on:

    password   client_password_auth / server_password_auth      (mutual; the server stores PasswordVerifier only)
    signature  server_sign_auth / client_verify_signature       (server only; Ed25519, ECDSA, RSA-PSS, X.509)
    batch      BatchSigner + server_send_batch_proof / client_verify_batch   (one signature for many sids)

Each call takes `sid=None` (ask the local daemon through mptcrypt.api; NotProtected if the connection has no
session) or an explicit 32-byte sid. Layout: wire.py (frames), exchange.py + password.py + signature.py (sans-IO
exchanges), merkle.py + batch.py (batches), sockets.py (the blocking-socket edge), sid.py (where a sid comes from).
"""

from mptcrypt.auth.batch import BatchProof, BatchSigner
from mptcrypt.auth.errors import (
    AuthenticationFailed,
    AuthTimeout,
    NotProtected,
    ParametersRefused,
    PeerRejected,
    ProtocolViolation,
)
from mptcrypt.auth.merkle import MerkleTree, leaf_hash, node_hash, root_from_path
from mptcrypt.auth.password import (
    DEFAULT_KDF_POLICY,
    DEFAULT_SCRYPT,
    KdfPolicy,
    PasswordClient,
    PasswordServer,
    PasswordVerifier,
    ScryptParams,
    client_proof,
    derive_h,
    server_proof,
)
from mptcrypt.auth.sid import session_id_of
from mptcrypt.auth.signature import (
    ServerIdentity,
    ServerTrust,
    SignatureClient,
    load_public_key,
    sign_sid,
    verify_batch_proof,
    verify_sid_signature,
)
from mptcrypt.auth.sockets import (
    client_password_auth,
    client_verify_batch,
    client_verify_signature,
    send_not_protected,
    server_password_auth,
    server_send_batch_proof,
    server_sign_auth,
)
from mptcrypt.auth.wire import Scheme


__all__ = [
    "AuthTimeout",
    "AuthenticationFailed",
    "BatchProof",
    "BatchSigner",
    "DEFAULT_KDF_POLICY",
    "DEFAULT_SCRYPT",
    "KdfPolicy",
    "MerkleTree",
    "NotProtected",
    "ParametersRefused",
    "PasswordClient",
    "PasswordServer",
    "PasswordVerifier",
    "PeerRejected",
    "ProtocolViolation",
    "Scheme",
    "ScryptParams",
    "ServerIdentity",
    "ServerTrust",
    "SignatureClient",
    "client_password_auth",
    "client_proof",
    "client_verify_batch",
    "client_verify_signature",
    "derive_h",
    "leaf_hash",
    "load_public_key",
    "node_hash",
    "root_from_path",
    "server_password_auth",
    "server_proof",
    "server_send_batch_proof",
    "server_sign_auth",
    "send_not_protected",
    "session_id_of",
    "sign_sid",
    "verify_batch_proof",
    "verify_sid_signature",
]
