"""The blocking-socket edge: where sids come from (NotProtected, never a silent success), deadlines, and reading
exactly the exchange's frames so the application's stream continues intact."""

import hashlib
import socket
import sys
import threading
import time
import types

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

import mptcrypt
from mptcrypt.auth import (
    AuthTimeout,
    NotProtected,
    PasswordVerifier,
    PeerRejected,
    client_password_auth,
    client_verify_signature,
    server_password_auth,
    server_sign_auth,
    session_id_of,
)
from mptcrypt.auth.password import TEST_KDF_POLICY, TEST_SCRYPT
from mptcrypt.auth.wire import FailReason
from mptcrypt.errors import DaemonNotRunning

SID = hashlib.sha256(b"sid").digest()
KEY = ed25519.Ed25519PrivateKey.generate()
VERIFIERS = {"alice": PasswordVerifier.create("pw", params=TEST_SCRYPT)}


def fake_api(monkeypatch, session_id):
    api = types.ModuleType("mptcrypt.api")
    api.session_id = session_id
    monkeypatch.setitem(sys.modules, "mptcrypt.api", api)
    monkeypatch.setattr(mptcrypt, "api", api, raising=False)


def in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as exc:  # noqa: BLE001
            out["value"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_sid_none_from_the_daemon_is_not_protected(monkeypatch) -> None:
    fake_api(monkeypatch, lambda sock: None)
    c, s = socket.socketpair()
    with pytest.raises(NotProtected, match="not protected by mptcrypt"):
        session_id_of(c)
    t, out = in_thread(lambda: server_password_auth(s, VERIFIERS.get, sid=SID, timeout=5))
    with pytest.raises(NotProtected):
        client_password_auth(c, "alice", "pw", policy=TEST_KDF_POLICY)
    t.join(5)
    assert isinstance(out["value"], PeerRejected) and out["value"].reason == FailReason.NOT_PROTECTED
    with pytest.raises(NotProtected):
        server_sign_auth(s, KEY)
    with pytest.raises(PeerRejected, match="no mptcrypt session"):  # the client hears why, at once
        client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID, timeout=5)
    with pytest.raises(NotProtected):  # a client without a sid reads nothing
        client_verify_signature(c, pinned_key=KEY.public_key())


def test_sid_from_the_daemon_is_used(monkeypatch) -> None:
    fake_api(monkeypatch, lambda sock: SID)
    c, s = socket.socketpair()
    t, out = in_thread(lambda: server_password_auth(s, VERIFIERS.get, timeout=5))
    assert client_password_auth(c, "alice", "pw", policy=TEST_KDF_POLICY) == "mptcrypt"
    t.join(5)
    assert out["value"] == "alice"


def test_no_api_module_or_no_daemon_is_not_protected(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mptcrypt.api", None)
    monkeypatch.delattr(mptcrypt, "api", raising=False)
    c, _ = socket.socketpair()
    with pytest.raises(NotProtected, match="mptcrypt.api is not available"):
        session_id_of(c)

    def no_daemon(sock):
        raise DaemonNotRunning("no daemon answers on the control socket")

    fake_api(monkeypatch, no_daemon)
    with pytest.raises(NotProtected, match="no mptcrypt daemon"):
        session_id_of(c)


def test_bad_sids_are_programming_errors(monkeypatch) -> None:
    c, _ = socket.socketpair()
    with pytest.raises(ValueError):
        client_verify_signature(c, pinned_key=KEY.public_key(), sid=bytes(31))
    with pytest.raises(TypeError):
        client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID.hex())
    fake_api(monkeypatch, lambda sock: b"short")
    with pytest.raises(ValueError):
        session_id_of(c)


def test_deadline_and_socket_timeout_restored() -> None:
    c, s = socket.socketpair()
    c.settimeout(7.0)
    start = time.monotonic()
    with pytest.raises(AuthTimeout, match="SIGNATURE"):
        client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID, timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2
    assert c.gettimeout() == 7.0
    s.sendall(b"\x05\x02\x00")  # a header trickles in and stops: still bounded by the deadline
    with pytest.raises(AuthTimeout):
        client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID, timeout=0.2)


def test_application_bytes_after_the_exchange_are_left_alone() -> None:
    c, s = socket.socketpair()
    t, out = in_thread(lambda: (server_password_auth(s, VERIFIERS.get, sid=SID, timeout=5),
                                s.sendall(b"server says hi"), s.recv(100)))
    client_password_auth(c, "alice", "pw", sid=SID, policy=TEST_KDF_POLICY)
    c.sendall(b"client says hi")
    assert c.recv(100) == b"server says hi"
    t.join(5)
    assert out["value"][0] == "alice" and out["value"][2] == b"client says hi"

    # the signature frame and application data in one segment: the client takes only its frame
    from mptcrypt.auth import sign_sid

    s.sendall(sign_sid(KEY, SID).encode() + b"GET /")
    client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID)
    assert c.recv(100) == b"GET /"


def test_blocking_sockets_without_timeout() -> None:
    c, s = socket.socketpair()
    server_sign_auth(s, KEY, sid=SID, timeout=None)
    assert client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID, timeout=None).sid == SID
    assert c.gettimeout() is None


def test_loopback_tcp() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]

        def serve_one():
            conn, _ = lsock.accept()
            with conn:
                return server_sign_auth(conn, KEY, sid=SID)

        t, out = in_thread(serve_one)
        with socket.create_connection(("127.0.0.1", port)) as c:
            ident = client_verify_signature(c, pinned_key=KEY.public_key(), sid=SID)
        t.join(5)
    assert ident.sid == SID == out["value"]
