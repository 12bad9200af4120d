"""Password mutual authentication: pinned vectors, verifiers, and the exchange between two threads, honest and not."""

import hashlib
import os
import socket
import threading

import pytest

from mptcrypt.auth import (
    AuthenticationFailed,
    KdfPolicy,
    ParametersRefused,
    PasswordClient,
    PasswordServer,
    PasswordVerifier,
    PeerRejected,
    ProtocolViolation,
    ScryptParams,
    client_password_auth,
    client_proof,
    derive_h,
    server_password_auth,
    server_proof,
)
from mptcrypt.auth.password import TEST_KDF_POLICY, TEST_SCRYPT, scrypt_salt
from mptcrypt.auth.wire import FailReason, MsgType, PwHello, PwParams, Scheme, encode_failure, encode_proof

# --- known vectors (computed once with this implementation, cross-checked against hashlib.scrypt below) ---
V_PASSWORD = "correct horse battery staple"
V_REALM = "mptcrypt test"
V_SALT = bytes(range(16))
V_SID = bytes(range(32))
V_H = "efbaf2675ef86cd77f4fd4cb3c8be9a286385e65480512a9821fe783b6f8105f"
V_CLIENT_PROOF = "f1bc0a40ab6604da204f8a61b758ae894114ab1a32876b2fa51960a2b42a39cb"
V_SERVER_PROOF = "3ae12cc8d74fadcc4d3e0373fdd90073b46b389e603144df5351ab2693ede7de"
V_STRING = ("$mptcrypt-scrypt$v=1$ln=10,r=8,p=1$mptcrypt%20test$AAECAwQFBgcICQoLDA0ODw"
            "$77ryZ174bNd_T9TLPIvpooY4XmVIBRKpgh_ng7b4EF8")

SID_A = hashlib.sha256(b"client leg").digest()
SID_B = hashlib.sha256(b"server leg").digest()


def test_known_vector() -> None:
    v = PasswordVerifier.create(V_PASSWORD, realm=V_REALM, params=TEST_SCRYPT, salt=V_SALT)
    assert v.h.hex() == V_H
    assert client_proof(v.h, V_SID).hex() == V_CLIENT_PROOF
    assert server_proof(v.h, V_SID).hex() == V_SERVER_PROOF
    assert v.to_string() == V_STRING
    assert PasswordVerifier.from_string(V_STRING) == v
    assert PasswordVerifier.from_bytes(V_STRING.encode()) == v


def test_h_matches_an_independent_scrypt() -> None:
    salt_input = b"mptcrypt password v1\x00" + b"\x10" + V_SALT + bytes([len(V_REALM)]) + V_REALM.encode()
    assert scrypt_salt(V_SALT, V_REALM) == salt_input
    ref = hashlib.scrypt(V_PASSWORD.encode(), salt=salt_input, n=1024, r=8, p=1, dklen=32)
    assert ref.hex() == V_H


def test_proofs_are_hmac_of_the_tags() -> None:
    import hmac

    h = bytes.fromhex(V_H)
    assert client_proof(h, V_SID) == hmac.new(h, b"mptcrypt auth client" + V_SID, "sha256").digest()
    assert server_proof(h, V_SID) == hmac.new(h, b"mptcrypt auth server" + V_SID, "sha256").digest()


def test_password_text_is_nfc_normalised() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert derive_h(composed, V_SALT, "r", TEST_SCRYPT) == derive_h(decomposed, V_SALT, "r", TEST_SCRYPT)
    assert derive_h(composed, V_SALT, "r", TEST_SCRYPT) == derive_h(composed.encode(), V_SALT, "r", TEST_SCRYPT)


def test_verifier_hides_h_and_checks_passwords() -> None:
    v = PasswordVerifier.create("pw", realm="a$b,c/d é", params=TEST_SCRYPT)
    assert v.h.hex() not in repr(v)
    assert PasswordVerifier.from_string(v.to_string()) == v
    assert v.check_password("pw") and not v.check_password("pW")
    assert len(v.salt) == 16 and v.salt != PasswordVerifier.create("pw", params=TEST_SCRYPT).salt


@pytest.mark.parametrize("bad", [
    "", "plain text", V_STRING.replace("$v=1$", "$v=2$"), V_STRING.replace("ln=10", "ln=x"),
    V_STRING.replace("ln=10,", ""), V_STRING + "$extra", V_STRING[:-2], V_STRING.replace("AAECAw", "AA=CAw"),
    V_STRING.replace("ln=10", "ln=99"),
])
def test_verifier_parse_rejects_garbage(bad) -> None:
    with pytest.raises(ValueError):
        PasswordVerifier.from_string(bad)


# --- the exchange over a socketpair, two threads ----------------------------------------------------


def run_pair(server_fn, client_fn, timeout=5.0):
    """Run server_fn(sock) in a thread and client_fn(sock) here; return (server outcome, client outcome), each the
    return value or the exception raised."""
    c, s = socket.socketpair()
    c.settimeout(timeout)
    s.settimeout(timeout)
    out = {}

    def serve():
        try:
            out["server"] = server_fn(s)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test looks at
            out["server"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        client = client_fn(c)
    except Exception as exc:  # noqa: BLE001
        client = exc
    t.join(timeout)
    assert not t.is_alive(), "server thread hung"
    c.close()
    s.close()
    return out["server"], client


VERIFIERS = {"alice": PasswordVerifier.create("hunter2", realm="lab", params=TEST_SCRYPT)}


def server(sid=SID_A, **kw):
    return lambda s: server_password_auth(s, VERIFIERS.get, sid=sid, decoy_realm="lab", decoy_params=TEST_SCRYPT,
                                          **kw)


def client(user="alice", password="hunter2", sid=SID_A, policy=TEST_KDF_POLICY, **kw):
    return lambda c: client_password_auth(c, user, password, sid=sid, policy=policy, **kw)


def test_honest_run() -> None:
    assert run_pair(server(), client()) == ("alice", "lab")


def test_verifier_strings_from_lookup() -> None:
    srv = lambda s: server_password_auth(s, lambda u: VERIFIERS[u].to_string(), sid=SID_A)  # noqa: E731
    assert run_pair(srv, client()) == ("alice", "lab")


def test_wrong_password() -> None:
    srv, cli = run_pair(server(), client(password="hunter3"))
    assert isinstance(srv, AuthenticationFailed) and "does not match" in str(srv)
    assert isinstance(cli, PeerRejected) and cli.reason == FailReason.AUTH_FAILED


def params_for(user: str) -> PwParams:
    srv = PasswordServer(VERIFIERS.get, SID_A, decoy_realm="lab", decoy_params=TEST_SCRYPT)
    srv.receive_frame(PwHello(user).encode())
    return PwParams.parse(srv.data_to_send()[4:])


def test_unknown_user_looks_like_a_wrong_password() -> None:
    srv, cli = run_pair(server(), client(user="mallory"))
    assert isinstance(srv, AuthenticationFailed) and isinstance(cli, PeerRejected)
    assert cli.reason == FailReason.AUTH_FAILED
    known, unknown = params_for("alice"), params_for("mallory")
    assert (unknown.kdf, unknown.log2_n, unknown.r, unknown.p, unknown.realm, len(unknown.salt)) == (
        known.kdf, known.log2_n, known.r, known.p, known.realm, len(known.salt))
    assert unknown.salt == params_for("mallory").salt != params_for("mallet").salt  # stable per user


def test_swapped_sid_fails_on_both_sides() -> None:
    """A man in the middle has one session with the client and another with the server: different sids."""
    srv, cli = run_pair(server(sid=SID_B), client(sid=SID_A))
    assert isinstance(srv, AuthenticationFailed)
    assert isinstance(cli, AuthenticationFailed)


def test_mitm_relaying_proofs_between_two_sessions_fails() -> None:
    """Sans-IO: the MITM forwards every frame unchanged between a client (sid A) and a server (sid B)."""
    cli = PasswordClient("alice", "hunter2", SID_A, policy=TEST_KDF_POLICY)
    srv = PasswordServer(VERIFIERS.get, SID_B)
    srv.receive_frame(cli.data_to_send())
    cli.receive_frame(srv.data_to_send())
    with pytest.raises(AuthenticationFailed):
        srv.receive_frame(cli.data_to_send())
    assert srv.data_to_send() == encode_failure(Scheme.PASSWORD, FailReason.AUTH_FAILED)  # no server proof leaks


def test_server_reflecting_the_client_proof_fails() -> None:
    """A fake server that echoes the client's proof as its own: TAG_CLIENT != TAG_SERVER stops it."""

    def reflector(s):
        srv = PasswordServer(VERIFIERS.get, SID_A)
        srv.receive_frame(s.recv(4096))
        s.sendall(srv.data_to_send())
        proof = s.recv(4096)[4:]
        s.sendall(encode_proof(MsgType.PW_SERVER_PROOF, proof))

    _, cli = run_pair(reflector, client())
    assert isinstance(cli, AuthenticationFailed) and "server's proof does not match" in str(cli)


def test_replayed_message_of_the_wrong_type() -> None:
    """The server answers the client's proof with a PW_PARAMS (a replayed earlier message)."""

    def replayer(s):
        srv = PasswordServer(VERIFIERS.get, SID_A)
        srv.receive_frame(s.recv(4096))
        params = srv.data_to_send()
        s.sendall(params)
        s.recv(4096)
        s.sendall(params)

    _, cli = run_pair(replayer, client())
    assert isinstance(cli, ProtocolViolation) and "unexpected PW_PARAMS" in str(cli)


def test_client_sending_a_server_proof_is_refused() -> None:
    def bad_client(c):
        c.sendall(encode_proof(MsgType.PW_SERVER_PROOF, bytes(32)))
        return c.recv(16)

    srv, answer = run_pair(server(), bad_client)
    assert isinstance(srv, ProtocolViolation)
    assert answer == encode_failure(Scheme.PASSWORD, FailReason.PROTOCOL)


def test_truncated_proof() -> None:
    def truncating_client(c):
        ex = PasswordClient("alice", "hunter2", SID_A, policy=TEST_KDF_POLICY)
        c.sendall(ex.data_to_send())
        ex.receive_frame(c.recv(4096))
        frame = ex.data_to_send()
        c.sendall(b"\x03\x01\x00\x1f" + frame[4:-1])  # 31-byte proof, honest length field
        return c.recv(16)

    srv, answer = run_pair(server(), truncating_client)
    assert isinstance(srv, ProtocolViolation) and "31 bytes" in str(srv)
    assert answer == encode_failure(Scheme.PASSWORD, FailReason.PROTOCOL)


def test_proof_cut_short_by_close() -> None:
    def closing_client(c):
        ex = PasswordClient("alice", "hunter2", SID_A, policy=TEST_KDF_POLICY)
        c.sendall(ex.data_to_send())
        ex.receive_frame(c.recv(4096))
        c.sendall(ex.data_to_send()[:20])
        c.shutdown(socket.SHUT_WR)

    srv, _ = run_pair(server(), closing_client)
    assert isinstance(srv, AuthenticationFailed) and "closed the connection" in str(srv)


def test_garbled_framing() -> None:
    def garbling_client(c):
        c.sendall(b"GET / HTTP/1.1\r\n\r\n")
        return c.recv(16)

    srv, answer = run_pair(server(), garbling_client)
    assert isinstance(srv, ProtocolViolation) and "unknown message type" in str(srv)
    assert answer == encode_failure(Scheme.PASSWORD, FailReason.PROTOCOL)


def test_client_refuses_cheap_kdf_before_proving() -> None:
    """A MITM announcing cheap parameters gets no proof: only FAILURE(POLICY)."""
    got = {}

    def cheap_server(s):
        s.recv(4096)
        s.sendall(PwParams(1, 1, 1, 1, bytes(16), "lab").encode())
        got["answer"] = s.recv(4096)

    _, cli = run_pair(cheap_server, client(policy=KdfPolicy()))
    assert isinstance(cli, ParametersRefused) and "below this client's floor" in str(cli)
    assert got["answer"] == encode_failure(Scheme.PASSWORD, FailReason.POLICY)


def test_client_refuses_memory_bomb() -> None:
    heavy = {"alice": PasswordVerifier("lab", bytes(16), ScryptParams(30, 8, 1), bytes(32))}
    srv, cli = run_pair(lambda s: server_password_auth(s, heavy.get, sid=SID_A), client(policy=KdfPolicy()))
    assert isinstance(cli, ParametersRefused) and "above this client's limits" in str(cli)
    assert isinstance(srv, PeerRejected) and srv.reason == FailReason.POLICY


def test_client_checks_the_realm() -> None:
    srv, cli = run_pair(server(), client(expected_realm="production"))
    assert isinstance(cli, ParametersRefused) and "realm" in str(cli)
    assert isinstance(srv, PeerRejected)
    assert run_pair(server(), client(expected_realm="lab")) == ("alice", "lab")


def test_default_policy_accepts_default_params() -> None:
    KdfPolicy().check(ScryptParams())
    with pytest.raises(ParametersRefused):
        KdfPolicy().check(TEST_SCRYPT)


def test_sans_io_exchange_and_state_table() -> None:
    cli = PasswordClient("alice", "hunter2", SID_A, policy=TEST_KDF_POLICY)
    srv = PasswordServer(VERIFIERS.get, SID_A)
    assert srv.expected() == {MsgType.PW_HELLO} and cli.expected() == {MsgType.PW_PARAMS}
    for _ in range(2):
        srv.receive_frame(cli.data_to_send())
        cli.receive_frame(srv.data_to_send())
    assert cli.done and srv.done and srv.user == "alice" and srv.known_user
    assert cli.data_to_send() == b"" and srv.data_to_send() == b""
    with pytest.raises(ProtocolViolation):  # a done exchange accepts nothing more
        cli.receive_frame(encode_proof(MsgType.PW_SERVER_PROOF, bytes(32)))


@pytest.mark.parametrize("seed", range(5))
def test_random_sids_and_passwords(seed) -> None:
    sid = os.urandom(32)
    pw = os.urandom(12).hex()
    v = {"u": PasswordVerifier.create(pw, params=TEST_SCRYPT)}
    assert run_pair(lambda s: server_password_auth(s, v.get, sid=sid),
                    lambda c: client_password_auth(c, "u", pw, sid=sid, policy=TEST_KDF_POLICY)) == ("u", "mptcrypt")
