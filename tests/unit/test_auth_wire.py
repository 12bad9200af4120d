"""mptcrypt.auth framing: pinned bytes, header checks before any body is read, garbled bodies."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcrypt.auth import ProtocolViolation
from mptcrypt.auth.wire import (
    BODY_BOUNDS,
    HASH_LEN,
    HEADER_LEN,
    BatchSignatureMsg,
    FailReason,
    MsgType,
    PwHello,
    PwParams,
    Scheme,
    SigAlg,
    SignatureMsg,
    encode_failure,
    encode_frame,
    encode_proof,
    parse_failure,
    parse_header,
)

PW_ALL = frozenset({MsgType.PW_HELLO, MsgType.PW_PARAMS, MsgType.PW_CLIENT_PROOF, MsgType.PW_SERVER_PROOF})


def body(frame: bytes) -> bytes:
    return frame[HEADER_LEN:]


def test_pinned_frames() -> None:
    assert PwHello("alice").encode().hex() == "0101000605616c696365"
    assert encode_failure(Scheme.PASSWORD, FailReason.AUTH_FAILED).hex() == "0f01000101"
    params = PwParams(1, 15, 8, 1, bytes(range(16)), "lab").encode()
    assert params.hex() == "02010019" + "010f080110" + bytes(range(16)).hex() + "03" + b"lab".hex()
    assert encode_proof(MsgType.PW_CLIENT_PROOF, bytes(32)) == b"\x03\x01\x00\x20" + bytes(32)
    sig = SignatureMsg(SigAlg.ED25519, b"\xaa" * 64, (b"\x30\x01", b"\x30\x02\x00")).encode()
    assert sig.hex() == "0502004d" + "01" + "0040" + "aa" * 64 + "02" + "00023001" + "0003300200"
    batch = BatchSignatureMsg(SigAlg.ED25519, b"\xbb" * 64, 3, 2, (b"\xcc" * 32,)).encode()
    assert batch.hex() == ("0603006d" + "01" + "0040" + "bb" * 64 + "00000003" + "00000002" + "01" + "cc" * 32
                           + "00")


@pytest.mark.parametrize("msg", [
    PwHello("ålice"),
    PwParams(1, 10, 8, 1, b"s" * 16, ""),
    PwParams(1, 20, 255, 255, b"s" * 64, "r" * 255),
    SignatureMsg(SigAlg.RSA_PSS_SHA256, b"x" * 1024, tuple(b"c" * 1000 for _ in range(8))),
    BatchSignatureMsg(SigAlg.ECDSA_P256_SHA256, b"y" * 72, 2**32 - 1, 2**32 - 2, tuple(bytes([i]) * 32
                                                                                         for i in range(32))),
])
def test_roundtrip(msg) -> None:
    frame = msg.encode()
    header = parse_header(frame[:HEADER_LEN], frozenset(MsgType) - {MsgType.FAILURE})
    assert header.length == len(frame) - HEADER_LEN
    assert type(msg).parse(body(frame)) == msg


def test_header_rejects_unknown_type_wrong_scheme_and_bad_length() -> None:
    with pytest.raises(ProtocolViolation, match="unknown message type"):
        parse_header(b"\x7e\x01\x00\x01", PW_ALL)
    with pytest.raises(ProtocolViolation, match="scheme"):
        parse_header(b"\x01\x02\x00\x06", PW_ALL)  # PW_HELLO claimed for the signature scheme
    with pytest.raises(ProtocolViolation, match="unexpected PW_SERVER_PROOF"):
        parse_header(b"\x04\x01\x00\x20", frozenset({MsgType.PW_PARAMS}))
    with pytest.raises(ProtocolViolation, match="body of 31 bytes"):  # truncated proof, caught on the header
        parse_header(b"\x03\x01\x00\x1f", frozenset({MsgType.PW_CLIENT_PROOF}))
    with pytest.raises(ProtocolViolation, match="body of 33 bytes"):
        parse_header(b"\x03\x01\x00\x21", frozenset({MsgType.PW_CLIENT_PROOF}))
    with pytest.raises(ProtocolViolation, match="allowed 2..256"):  # a 64 KiB "user name" is refused unread
        parse_header(b"\x01\x01\xff\xff", frozenset({MsgType.PW_HELLO}))
    with pytest.raises(ProtocolViolation, match="header is 3 bytes"):
        parse_header(b"\x01\x01\x00", PW_ALL)


def test_failure_is_always_acceptable_with_the_exchange_scheme() -> None:
    assert parse_header(b"\x0f\x02\x00\x01", frozenset({MsgType.SIGNATURE, MsgType.BATCH_SIGNATURE})).length == 1
    assert parse_header(b"\x0f\x03\x00\x01", frozenset({MsgType.SIGNATURE, MsgType.BATCH_SIGNATURE})).length == 1
    with pytest.raises(ProtocolViolation):
        parse_header(b"\x0f\x01\x00\x01", frozenset({MsgType.SIGNATURE}))
    with pytest.raises(ProtocolViolation):  # a finished exchange expects nothing, not even FAILURE
        parse_header(b"\x0f\x01\x00\x01", frozenset())
    assert parse_failure(b"\x09") == 9


@pytest.mark.parametrize("cls,raw", [
    (PwHello, b"\x00"),  # empty user
    (PwHello, b"\x05abc"),  # truncated
    (PwHello, b"\x02\xff\xfe"),  # not UTF-8
    (PwHello, b"\x01ab"),  # trailing byte
    (PwParams, b"\x01\x0a\x08\x01\x0f" + b"s" * 15 + b"\x00"),  # salt too short
    (PwParams, b"\x01\x0a\x08\x01\x10" + b"s" * 16 + b"\x05ab"),  # realm truncated
    (SignatureMsg, b"\x09\x00\x01x\x00"),  # unknown algorithm
    (SignatureMsg, b"\x01\x00\x00\x00"),  # empty signature
    (SignatureMsg, b"\x01\x00\x40" + b"x" * 63),  # truncated signature
    (SignatureMsg, b"\x01\x00\x01x\x09"),  # too many certificates
    (SignatureMsg, b"\x01\x00\x01x\x01\x00\x00"),  # empty certificate
    (SignatureMsg, b"\x01\x00\x01x\x00\x00"),  # trailing byte
    (BatchSignatureMsg, b"\x01\x00\x01x" + bytes(8) + b"\x21"),  # path longer than 32
    (BatchSignatureMsg, b"\x01\x00\x01x" + bytes(8) + b"\x02" + bytes(63) + b"\x00"),  # truncated path
])
def test_garbled_bodies(cls, raw) -> None:
    with pytest.raises(ProtocolViolation):
        cls.parse(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([PwHello, PwParams, SignatureMsg, BatchSignatureMsg]), st.binary(max_size=300))
def test_parsers_raise_only_protocol_violation(cls, raw) -> None:
    try:
        cls.parse(raw)
    except ProtocolViolation:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.sets(st.sampled_from(list(MsgType))))
def test_header_parser_raises_only_protocol_violation(raw, expected) -> None:
    try:
        header = parse_header(raw, frozenset(expected))
    except ProtocolViolation:
        return
    low, high = BODY_BOUNDS[header.type]
    assert low <= header.length <= high


def test_encoders_refuse_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError):
        PwHello("").encode()
    with pytest.raises(ValueError):
        PwHello("u" * 256).encode()
    with pytest.raises(ValueError):
        encode_proof(MsgType.PW_CLIENT_PROOF, bytes(HASH_LEN - 1))
    with pytest.raises(ValueError):
        encode_frame(MsgType.SIGNATURE, Scheme.SIGNATURE, bytes(0x10000))
    with pytest.raises(ValueError):
        SignatureMsg(SigAlg.ED25519, b"x", tuple(b"c" for _ in range(9))).encode()
