"""Server signature over the sid: pinned Ed25519 vector, every key type, wrong key, swapped sid, X.509 chains."""

import datetime
import hashlib
import socket
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mptcrypt.auth import (
    AuthenticationFailed,
    PeerRejected,
    ProtocolViolation,
    ServerTrust,
    client_verify_signature,
    load_public_key,
    server_sign_auth,
    sign_sid,
    verify_sid_signature,
)
from mptcrypt.auth.signature import sid_message
from mptcrypt.auth.wire import HEADER_LEN, SigAlg, SignatureMsg

V_SID = bytes(range(32))
V_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0x42]) * 32)
V_PUB = "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12"
V_SIG = ("ba57a7918f97dc90699854f2653b8476529893cd2334ba2482799fef2482e5be"
         "065c60d75eb948979ecdbcaba5ee61a606e5b84acd2d6b9348a3d4f19700610c")

SID_A = hashlib.sha256(b"client leg").digest()
SID_B = hashlib.sha256(b"server leg").digest()
RSA_KEY = rsa.generate_private_key(65537, 2048)
KEYS = {
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "rsa2048": RSA_KEY,
}


def test_known_vector() -> None:
    assert V_KEY.public_key().public_bytes_raw().hex() == V_PUB
    assert sid_message(V_SID) == b"mptcrypt sid signature v1" + V_SID
    msg = sign_sid(V_KEY, V_SID)
    assert (msg.alg, msg.signature.hex(), msg.chain) == (SigAlg.ED25519, V_SIG, ())
    trust = ServerTrust(pinned_key=bytes.fromhex(V_PUB))
    assert verify_sid_signature(msg, V_SID, trust).public_key.public_bytes_raw().hex() == V_PUB


@pytest.mark.parametrize("name", KEYS)
def test_every_key_type_pinned(name) -> None:
    key = KEYS[name]
    msg = SignatureMsg.parse(sign_sid(key, SID_A).encode()[HEADER_LEN:])
    verify_sid_signature(msg, SID_A, ServerTrust(pinned_key=key.public_key()))
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        verify_sid_signature(msg, SID_B, ServerTrust(pinned_key=key.public_key()))


def test_pinned_key_forms() -> None:
    pub = KEYS["p256"].public_key()
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_public_key(pem) == load_public_key(der) == pub
    with pytest.raises(ValueError):
        load_public_key(b"not a key")
    with pytest.raises(TypeError):
        load_public_key(rsa.generate_private_key(65537, 1024).public_key())
    with pytest.raises(TypeError):
        sign_sid(ec.generate_private_key(ec.SECP521R1()), SID_A)


def test_wrong_key() -> None:
    msg = sign_sid(KEYS["ed25519"], SID_A)
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        verify_sid_signature(msg, SID_A, ServerTrust(pinned_key=ed25519.Ed25519PrivateKey.generate().public_key()))


def test_algorithm_must_match_the_key() -> None:
    msg = sign_sid(KEYS["p256"], SID_A)
    with pytest.raises(AuthenticationFailed, match="does not match"):
        verify_sid_signature(msg, SID_A, ServerTrust(pinned_key=KEYS["p384"].public_key()))
    forged = SignatureMsg(SigAlg.ED25519, msg.signature[:64].ljust(64, b"\0"))
    with pytest.raises(AuthenticationFailed, match="does not match"):
        verify_sid_signature(forged, SID_A, ServerTrust(pinned_key=KEYS["p256"].public_key()))


@pytest.mark.parametrize("cut", [1, 10, 63])
def test_tampered_signature(cut) -> None:
    msg = sign_sid(KEYS["ed25519"], SID_A)
    flipped = bytearray(msg.signature)
    flipped[cut] ^= 1
    trust = ServerTrust(pinned_key=KEYS["ed25519"].public_key())
    with pytest.raises(AuthenticationFailed):
        verify_sid_signature(SignatureMsg(msg.alg, bytes(flipped)), SID_A, trust)
    with pytest.raises(AuthenticationFailed):
        verify_sid_signature(SignatureMsg(msg.alg, msg.signature[:cut]), SID_A, trust)


def test_trust_needs_exactly_one_anchor_and_a_name_for_a_ca() -> None:
    with pytest.raises(ValueError):
        ServerTrust()
    with pytest.raises(ValueError):
        ServerTrust(pinned_key=KEYS["ed25519"].public_key(), ca_bundle=[PKI.root])
    with pytest.raises(ValueError, match="server_name"):
        ServerTrust(ca_bundle=[PKI.root])


# --- X.509 ---------------------------------------------------------------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject_key, subject, issuer_key, issuer, *, ca, san=None, days=30,
              ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)):
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    return b.sign(issuer_key, None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


class PKI:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_key, "mptcrypt test root", root_key, "mptcrypt test root", ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert(inter_key, "mptcrypt test intermediate", root_key, "mptcrypt test root", ca=True)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = make_cert(other_key, "someone else", other_key, "someone else", ca=True)


@pytest.mark.parametrize("name", KEYS)
def test_ca_chain(name) -> None:
    key = KEYS[name]
    leaf = make_cert(key, "server", PKI.inter_key, "mptcrypt test intermediate", ca=False, san="server.mptc.test")
    msg = sign_sid(key, SID_A, certificate_chain=[leaf, PKI.inter])
    ident = verify_sid_signature(msg, SID_A, ServerTrust(ca_bundle=[PKI.root], server_name="server.mptc.test"))
    assert ident.certificate == leaf and ident.chain == (leaf, PKI.inter, PKI.root)
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        verify_sid_signature(msg, SID_B, ServerTrust(ca_bundle=[PKI.root], server_name="server.mptc.test"))


def test_ca_chain_failures() -> None:
    key = KEYS["p256"]
    leaf = make_cert(key, "server", PKI.inter_key, "mptcrypt test intermediate", ca=False, san="server.mptc.test")
    good = ServerTrust(ca_bundle=[PKI.root], server_name="server.mptc.test")
    cases = {
        "wrong name": (sign_sid(key, SID_A, certificate_chain=[leaf, PKI.inter]),
                       ServerTrust(ca_bundle=[PKI.root], server_name="other.mptc.test")),
        "untrusted CA": (sign_sid(key, SID_A, certificate_chain=[leaf, PKI.inter]),
                         ServerTrust(ca_bundle=[PKI.other_root], server_name="server.mptc.test")),
        "missing intermediate": (sign_sid(key, SID_A, certificate_chain=[leaf]), good),
        "no chain": (sign_sid(key, SID_A), good),
        "client-auth only": (sign_sid(key, SID_A, certificate_chain=[
            make_cert(key, "server", PKI.inter_key, "mptcrypt test intermediate", ca=False, san="server.mptc.test",
                      ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,)), PKI.inter]), good),
    }
    for what, (msg, trust) in cases.items():
        with pytest.raises(AuthenticationFailed):
            verify_sid_signature(msg, SID_A, trust)
            pytest.fail(f"{what}: accepted")  # reached only if verification did not raise
    # a valid certificate for another key: the signature must be by the certified key
    other = ec.generate_private_key(ec.SECP256R1())
    other_leaf = make_cert(other, "server", PKI.inter_key, "mptcrypt test intermediate", ca=False,
                           san="server.mptc.test")
    swapped = SignatureMsg(SigAlg.ECDSA_P256_SHA256, sign_sid(key, SID_A).signature,
                           tuple(c.public_bytes(serialization.Encoding.DER) for c in (other_leaf, PKI.inter)))
    with pytest.raises(AuthenticationFailed, match="does not verify"):
        verify_sid_signature(swapped, SID_A, good)
    garbled = SignatureMsg(SigAlg.ECDSA_P256_SHA256, b"x" * 70, (b"\x30\x03abc",))
    with pytest.raises(ProtocolViolation, match="does not parse"):
        verify_sid_signature(garbled, SID_A, good)
    with pytest.raises(ValueError, match="does not certify"):
        sign_sid(other, SID_A, certificate_chain=[leaf, PKI.inter])


def test_ca_bundle_as_pem() -> None:
    pem = PKI.other_root.public_bytes(serialization.Encoding.PEM) + PKI.root.public_bytes(serialization.Encoding.PEM)
    key = KEYS["ed25519"]
    leaf = make_cert(key, "server", PKI.inter_key, "mptcrypt test intermediate", ca=False, san="server.mptc.test")
    msg = sign_sid(key, SID_A, certificate_chain=[leaf, PKI.inter])
    verify_sid_signature(msg, SID_A, ServerTrust(ca_bundle=pem, server_name="server.mptc.test"))


# --- over a socketpair -------------------------------------------------------------------------------------


def run_pair(server_fn, client_fn):
    c, s = socket.socketpair()
    out = {}

    def serve():
        try:
            out["server"] = server_fn(s)
        except Exception as exc:  # noqa: BLE001
            out["server"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        client = client_fn(c)
    except Exception as exc:  # noqa: BLE001
        client = exc
    t.join(5)
    c.close()
    s.close()
    return out["server"], client


def test_over_a_socketpair() -> None:
    key = KEYS["ed25519"]
    srv, ident = run_pair(lambda s: server_sign_auth(s, key, sid=SID_A),
                          lambda c: client_verify_signature(c, pinned_key=key.public_key(), sid=SID_A))
    assert srv == SID_A and ident.sid == SID_A and ident.batch is None


def test_over_a_socketpair_with_a_chain() -> None:
    key = KEYS["rsa2048"]
    leaf = make_cert(key, "server", PKI.inter_key, "mptcrypt test intermediate", ca=False, san="server.mptc.test")
    _, ident = run_pair(lambda s: server_sign_auth(s, key, sid=SID_A, certificate_chain=[leaf, PKI.inter]),
                        lambda c: client_verify_signature(c, ca_bundle=[PKI.root], server_name="server.mptc.test",
                                                          sid=SID_A))
    assert ident.certificate == leaf


def test_swapped_sid_over_a_socketpair() -> None:
    key = KEYS["ed25519"]
    _, cli = run_pair(lambda s: server_sign_auth(s, key, sid=SID_B),
                      lambda c: client_verify_signature(c, pinned_key=key.public_key(), sid=SID_A))
    assert isinstance(cli, AuthenticationFailed) and "another session ID" in str(cli)


def test_wrong_key_over_a_socketpair() -> None:
    _, cli = run_pair(lambda s: server_sign_auth(s, KEYS["ed25519"], sid=SID_A),
                      lambda c: client_verify_signature(c, pinned_key=V_KEY.public_key(), sid=SID_A))
    assert isinstance(cli, AuthenticationFailed)


def test_password_message_where_a_signature_is_expected() -> None:
    from mptcrypt.auth.wire import PwHello

    _, cli = run_pair(lambda s: s.sendall(PwHello("x").encode()),
                      lambda c: client_verify_signature(c, pinned_key=V_KEY.public_key(), sid=SID_A))
    assert isinstance(cli, ProtocolViolation)


def test_server_without_session_tells_the_client(monkeypatch) -> None:
    from mptcrypt.auth import NotProtected
    from mptcrypt.auth import sid as sid_mod

    def no_session(sock):
        raise NotProtected("no session")

    monkeypatch.setattr(sid_mod, "session_id_of", no_session)
    srv, cli = run_pair(lambda s: server_sign_auth(s, KEYS["ed25519"]),
                        lambda c: client_verify_signature(c, pinned_key=V_KEY.public_key(), sid=SID_A))
    assert isinstance(srv, NotProtected)
    assert isinstance(cli, PeerRejected) and "no mptcrypt session" in str(cli)
