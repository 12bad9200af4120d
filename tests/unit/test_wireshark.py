"""The Lua dissector against crafted captures (tshark -X lua_script), and `mptcrypt wireshark path|install`."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from mptcrypt.constants import Msg
from mptcrypt.wire import messages as m
from mptcrypt.wire.checksum import tcp_checksum
from mptcrypt.wire.ip import build_ip_header
from mptcrypt.wire.tcp import ACK, PSH, SYN, pad_options
from mptcrypt.wireshark import LUA_NAME, dissector_path, personal_plugin_dir
from mptcrypt.wireshark.pcapng import Frame, read_frames, write_pcapng

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (package tshark)")
ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
SRC, DST = bytes([10, 0, 1, 2]), bytes([10, 0, 1, 1])


def frame(options: bytes, payload: bytes = b"", flags: int = ACK, seq: int = 1000, ack: int = 2000) -> bytes:
    options = pad_options(options)
    tcp = bytearray(struct.pack("!HHIIHHHH", 40000, 5000, seq, ack, ((20 + len(options)) >> 2) << 12 | flags,
                                65535, 0, 0) + options + payload)
    struct.pack_into("!H", tcp, 16, tcp_checksum(SRC, DST, tcp))
    return ETH + build_ip_header(SRC, DST, len(tcp)) + bytes(tcp)


def tshark(tmp_path, frames: list[bytes | Frame], fields: list[str]) -> list[dict[str, str]]:
    path = tmp_path / "crafted.pcapng"
    with open(path, "wb") as out:
        write_pcapng(out, [f if isinstance(f, Frame) else Frame(1.0 + i, f) for i, f in enumerate(frames)])
    proc = subprocess.run(["tshark", "-n", "-X", f"lua_script:{dissector_path()}", "-r", str(path), "-T", "fields",
                           "-E", "separator=|", "-E", "aggregator=,", *[a for f in fields for a in ("-e", f)]],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Lua: Error" not in proc.stderr, proc.stderr
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines()]


@needs_tshark
def test_every_option_by_name(tmp_path):
    proof, rid, tag = bytes(range(8)), bytes(range(0x10, 0x18)), bytes(range(0xA0, 0xA8))
    frames = [
        frame(m.Hello(2).encode(), flags=SYN),
        frame(m.PkConf((1, 2, 3)).encode(), flags=SYN | ACK),
        frame(m.NextK1Join(7, proof).encode(), flags=SYN),
        frame(m.NextK1Resume(rid, proof).encode(), flags=SYN),
        frame(m.NextK2(proof).encode(), flags=SYN | ACK),
        frame(m.Rekey(3).encode()),
        frame(m.mac_option(tag), b"ciphertext"),
        frame(bytes((253, 6, 0x12, 0x34, 1, 1))),  # another experiment's ExID: not ours
    ]
    rows = tshark(tmp_path, frames, ["mptcrypt.message", "mptcrypt.exid", "mptcrypt.type", "mptcrypt.hello.version",
                                     "mptcrypt.pkconf.cipher", "mptcrypt.nextk1.index", "mptcrypt.nextk1.proof",
                                     "mptcrypt.nextk1.resume_id", "mptcrypt.nextk2.proof", "mptcrypt.rekey.generation",
                                     "mptcrypt.mac.tag", "mptcrypt.length", "_ws.col.Info"])
    assert [r["mptcrypt.message"] for r in rows] == ["HELLO", "PKCONF", "NEXTK1 join", "NEXTK1 resume", "NEXTK2",
                                                     "REKEY", "MAC", ""]
    assert all(r["mptcrypt.exid"] == "0x4d50" for r in rows[:7])
    assert [r["mptcrypt.type"] for r in rows] == ["1", "2", "5", "5", "6", "7", "", ""]
    assert [r["mptcrypt.length"] for r in rows[:7]] == ["6", "8", "15", "21", "13", "6", "12"]
    assert rows[0]["mptcrypt.hello.version"] == "2"  # read from the wire, whatever the version
    assert rows[1]["mptcrypt.pkconf.cipher"] == "0x01,0x02,0x03"
    assert rows[2]["mptcrypt.nextk1.index"] == "7" and rows[2]["mptcrypt.nextk1.proof"] == proof.hex()
    assert rows[3]["mptcrypt.nextk1.resume_id"] == rid.hex() and rows[3]["mptcrypt.nextk1.proof"] == proof.hex()
    assert rows[4]["mptcrypt.nextk2.proof"] == proof.hex()
    assert rows[5]["mptcrypt.rekey.generation"] == "3"
    assert rows[6]["mptcrypt.mac.tag"] == tag.hex()
    assert "[mptcrypt PKCONF]" in rows[1]["_ws.col.Info"]


@needs_tshark
def test_cipher_names_and_init_payloads(tmp_path):
    n_c, k_c, k_s, n_s = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 129)), bytes(range(129, 161))
    init1 = m.Init1(2, (2, 1), n_c, k_c).encode()
    init2_p256 = m.Init2(2, k_s + n_s).encode()
    init2_rsa = m.Init2(1, bytes(256)).encode()
    frames = [frame(m.Marker(Msg.INIT1).encode(), init1, flags=ACK | PSH),
              frame(m.Marker(Msg.INIT2).encode(), init2_p256, flags=ACK | PSH),
              frame(m.Marker(Msg.INIT2).encode(), init2_rsa, flags=ACK | PSH)]
    fields = ["mptcrypt.message", "mptcrypt.init.magic", "mptcrypt.init.version", "mptcrypt.init.type",
              "mptcrypt.init.length", "mptcrypt.init1.pub_cipher", "mptcrypt.init1.sym_count",
              "mptcrypt.init1.sym_cipher", "mptcrypt.init1.n_c", "mptcrypt.init1.k_c_len", "mptcrypt.init1.k_c",
              "mptcrypt.init2.sym_cipher", "mptcrypt.init2.part_len", "mptcrypt.init2.k_s", "mptcrypt.init2.n_s",
              "mptcrypt.init2.encrypted_n_s", "_ws.expert.message"]
    r1, r2, r3 = tshark(tmp_path, frames, fields)
    assert r1["mptcrypt.message"] == "INIT1 marker,INIT1"
    assert (r1["mptcrypt.init.magic"], r1["mptcrypt.init.version"], r1["mptcrypt.init.type"]) == \
        ("MPTC", str(m.PROTOCOL_VERSION), "3")
    assert r1["mptcrypt.init.length"] == str(len(init1))
    assert (r1["mptcrypt.init1.pub_cipher"], r1["mptcrypt.init1.sym_count"], r1["mptcrypt.init1.sym_cipher"]) == \
        ("0x02", "2", "0x02,0x01")
    assert (r1["mptcrypt.init1.n_c"], r1["mptcrypt.init1.k_c_len"], r1["mptcrypt.init1.k_c"]) == \
        (n_c.hex(), "32", k_c.hex())
    assert r1["_ws.expert.message"] == ""
    assert r2["mptcrypt.message"] == "INIT2 marker,INIT2" and r2["mptcrypt.init.type"] == "4"
    assert (r2["mptcrypt.init2.sym_cipher"], r2["mptcrypt.init2.part_len"]) == ("0x02", "97")
    assert (r2["mptcrypt.init2.k_s"], r2["mptcrypt.init2.n_s"]) == (k_s.hex(), n_s.hex())
    assert r3["mptcrypt.init2.encrypted_n_s"] == bytes(256).hex() and r3["mptcrypt.init2.k_s"] == ""
    # the names Wireshark shows for the cipher ids
    proc = subprocess.run(["tshark", "-n", "-X", f"lua_script:{dissector_path()}", "-r",
                           str(tmp_path / "crafted.pcapng"), "-V", "-c", "1"], capture_output=True, text=True)
    assert "Public-key cipher: P-256 (0x02)" in proc.stdout and "Symmetric cipher: ChaCha20 (0x02)" in proc.stdout


@needs_tshark
def test_malformed_messages_raise_expert_info(tmp_path):
    good = m.Init1(1, (1,), bytes(32), bytes(32)).encode()
    frames = [frame(m.Marker(Msg.INIT1).encode(), good[:-1], flags=ACK | PSH),  # length field says one more byte
              frame(m.Marker(Msg.INIT2).encode(), b"XXXX" + good[4:], flags=ACK | PSH),  # bad magic
              frame(m.Marker(Msg.INIT1).encode(), flags=ACK),  # marker, no payload
              frame(bytes((253, 7, 0x4D, 0x50, 9, 0, 0))),  # undefined type
              frame(m.Marker(Msg.INIT2).encode(), good, flags=ACK | PSH)]  # INIT1 in a segment marked INIT2
    rows = tshark(tmp_path, frames, ["mptcrypt.message", "_ws.expert.message", "_ws.expert.severity"])
    assert [r["mptcrypt.message"] for r in rows] == ["INIT1 marker,malformed", "INIT2 marker,malformed",
                                                     "INIT1 marker,malformed", "malformed", "INIT2 marker,malformed"]
    assert f"length field {len(good)}, payload {len(good) - 1} bytes" in rows[0]["_ws.expert.message"]
    assert 'magic is not "MPTC"' in rows[1]["_ws.expert.message"]
    assert "without payload" in rows[2]["_ws.expert.message"]
    assert "type 9 with option length 7 is not defined" in rows[3]["_ws.expert.message"]
    assert "type 3 in a segment marked INIT2" in rows[4]["_ws.expert.message"]


@needs_tshark
def test_verdict_comment(tmp_path):
    frames = [Frame(1.0, frame(b"", b"plaintext"), "mptcrypt: MAC ok"),
              Frame(2.0, frame(m.mac_option(bytes(8)), b"forged"), "mptcrypt: bad MAC")]
    rows = tshark(tmp_path, frames, ["mptcrypt.verdict", "_ws.expert.message", "frame.comment"])
    assert [r["mptcrypt.verdict"] for r in rows] == ["MAC ok", "bad MAC"]
    assert "MAC does not verify" in rows[1]["_ws.expert.message"]


def test_pcapng_round_trip(tmp_path):
    frames = [Frame(1.5, b"\x01" * 61, "a comment"), Frame(2.25, b"\x02" * 64)]
    path = tmp_path / "x.pcapng"
    with open(path, "wb") as out:
        assert write_pcapng(out, frames) == 2
    back = list(read_frames(path.read_bytes()))
    assert [(f.time, f.data) for f in back] == [(1.5, b"\x01" * 61), (2.25, b"\x02" * 64)]


def test_path_and_install(tmp_path, monkeypatch, capsys):
    from mptcrypt import cli

    assert dissector_path().is_file() and dissector_path().name == LUA_NAME
    assert cli.main(["wireshark", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(dissector_path())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert personal_plugin_dir() == tmp_path / ".local/lib/wireshark/plugins"
    assert cli.main(["wireshark", "install"]) == 0
    assert (personal_plugin_dir() / LUA_NAME).read_bytes() == dissector_path().read_bytes()
