"""The key log: the engine hook, the line format, the 0600 file, and `mptcrypt decrypt` over an in-memory wire."""

from __future__ import annotations

import os
import stat

import pytest

from mptcrypt.daemon.keylog import HEADER, KeyLog, keylog_path, parse_line, read_keylog
from mptcrypt.errors import DecodeError
from mptcrypt.wire.messages import PROTOCOL_VERSION
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import ACK, PSH, SYN
from mptcrypt.wireshark.decrypt import VERDICT_BAD, VERDICT_OK, Decryptor, decrypt_file
from mptcrypt.wireshark.pcapng import Frame, read_frames, write_pcapng

from enginepair import EnginePair
from pktkit import C_ADDR, S_ADDR, segment, syn_options

ETH = bytes(12) + b"\x08\x00"
MARKER = b"KEYLOG-PLAINTEXT-MARKER"


@pytest.fixture
def logged(tmp_path):
    """An engine pair whose engines log keys to two files; one connection established, data both ways."""
    pair = EnginePair()
    logs = {side: KeyLog(str(tmp_path / f"{side}.keys"), PROTOCOL_VERSION) for side in ("c", "s")}
    for side, keylog in logs.items():
        pair.eng[side]._t.key_log = keylog  # what Engine(key_log=...) sets
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, 100, 0, SYN, syn_options()))
    pair.send("s", segment(S_ADDR, 5000, C_ADDR, 40000, 900, 101, SYN | ACK, syn_options(ts=False)))
    pair.send("c", segment(C_ADDR, 40000, S_ADDR, 5000, 101, 901, ACK))
    start = len(pair.wire)
    sent = [segment(C_ADDR, 40000, S_ADDR, 5000, 101, 901, ACK | PSH, [], MARKER + b" from the client"),
            segment(S_ADDR, 5000, C_ADDR, 40000, 901, 140, ACK | PSH, [], MARKER + b" from the server")]
    assert pair.send("c", sent[0]) == [sent[0]]
    assert pair.send("s", sent[1]) == [sent[1]]
    for keylog in logs.values():
        keylog.close()
    return pair, logs, sent, pair.wire[start:]


def test_both_ends_log_the_same_subflow_keys(logged, tmp_path):
    _pair, logs, _sent, _wire = logged
    for keylog in logs.values():
        assert stat.S_IMODE(os.stat(keylog.path).st_mode) == 0o600
        assert keylog.lines == 1
        assert open(keylog.path).read().startswith(HEADER)
    (c,), (s,) = read_keylog(logs["c"].path), read_keylog(logs["s"].path)
    assert c == s  # direction a = from the initiator, whoever wrote the line
    assert (c.version, c.initiator, c.responder, c.index, c.suite.name, c.isn_a, c.isn_b) == \
        (PROTOCOL_VERSION, ("10.0.1.2", 40000), ("10.0.1.1", 5000), 0, "AES128", 100, 900)
    assert c.a != c.b and len(c.a.mac) == 32


def test_decrypt_opens_every_protected_segment_and_flags_a_tampered_one(logged):
    _pair, logs, sent, wire = logged
    dec = Decryptor(read_keylog(logs["c"].path))
    on_wire = [p for p in wire if parse_segment(p).has_mac()]
    assert len(on_wire) == 2 and all(MARKER not in p for p in on_wire)
    assert [dec.packet(p) for p in on_wire] == [(sent[0], VERDICT_OK), (sent[1], VERDICT_OK)]
    tampered = bytearray(on_wire[1])
    tampered[-1] ^= 1
    dec = Decryptor(read_keylog(logs["c"].path))
    assert dec.packet(on_wire[0])[1] == VERDICT_OK
    assert dec.packet(bytes(tampered)) == (bytes(tampered), VERDICT_BAD)


def test_decrypt_file_writes_pcapng_with_verdicts(logged, tmp_path):
    _pair, logs, sent, wire = logged
    capture, out = tmp_path / "in.pcapng", tmp_path / "out.pcapng"
    forged = bytearray(wire[-1])
    forged[-3] ^= 0x40
    with open(capture, "wb") as fh:
        write_pcapng(fh, [Frame(float(i), ETH + p) for i, p in enumerate([*wire, bytes(forged)])])
    counts = decrypt_file(str(capture), logs["s"].path, str(out))
    assert counts == {"mac_ok": 2, "bad_mac": 1, "other": len(wire) - 2}
    frames = list(read_frames(out.read_bytes()))
    plain = [f.data[14:] for f in frames if MARKER in f.data]
    assert plain == sent


def test_parse_line_rejects_damage_and_skips_comments():
    assert parse_line("# comment\n") is None and parse_line("\n") is None
    for bad in ("SOMETHING 1 2 3", "MPTCRYPT_KEYS 1 10.0.1.2 x 10.0.1.1 5000 index=0",
                "MPTCRYPT_KEYS 1 10.0.1.2 1 10.0.1.1 5000 index=0 suite=AES128 isn_a=1 isn_b=2 a.enc=zz"):
        with pytest.raises(DecodeError):
            parse_line(bad)


def test_keylog_path_option_then_environment():
    assert keylog_path("/tmp/a", {"MPTCRYPT_KEYLOGFILE": "/tmp/b"}) == "/tmp/a"
    assert keylog_path(None, {"MPTCRYPT_KEYLOGFILE": "/tmp/b"}) == "/tmp/b"
    assert keylog_path(None, {}) is None
