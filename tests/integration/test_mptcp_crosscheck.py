"""Cross-check of the MPTCP option codec against the kernel and against tshark's MPTCP dissector.

Two namespaces ``mptc-x4-a`` (client) and ``mptc-x4-b`` (server) joined by two veth pairs (10.44.1.0/24 and
10.44.2.0/24). The client has a ``subflow`` endpoint on its second address; the server has ``signal``
endpoints (one with a port) so that the capture holds ADD_ADDR. A Python IPPROTO_MPTCP transfer runs in both
directions; then the client marks its second endpoint backup (MP_PRIO), the server withdraws an announced
address (REMOVE_ADDR) and the client closes with SO_LINGER 0 (MP_FASTCLOSE + MP_TCPRST on a RST).
tcpdump records both links; every MPTCP option of the capture is then

* parsed by ``parse_mptcp`` and re-encoded to the identical bytes,
* compared field by field with tshark's decode of the same packet (subtype, keys, tokens, nonces, HMACs,
  data ACK / DSN / subflow sequence / data-level length, address ids, addresses, ports, flags),
* and the RFC 8684 helpers are checked against what the kernels computed: tokens of the MP_JOIN SYNs, the
  truncated HMAC of every MP_JOIN SYN-ACK, the HMAC of every MP_JOIN ACK, the HMAC of every ADD_ADDR, and the
  IDSN against the first DSN of each direction.

A second, IPv6 run with timestamps off and on checks the option-budget claim for ADD_ADDR v6 with a port.

Needs root (namespaces), tcpdump and tshark; skips otherwise. Namespaces are always removed (try/finally).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field

import pytest

from mptcrypt.wire.mptcp import (
    MPTCP_RST_TRANSIENT,
    MPTCP_RST_U,
    MPTCP_RST_V,
    MPTCP_RST_W,
    MPTCPOPT_HMAC_LEN,
    MPTCPOPT_THMAC_LEN,
    Has,
    MptcpOption,
    Subtype,
    add_addr_hmac,
    encode_mptcp,
    join_hmac,
    mptcp_idsn,
    mptcp_token,
    parse_mptcp,
)
from mptcrypt.tools.option_budget import linux_options_len

pytestmark = pytest.mark.root

NS_A = "mptc-x4-a"
NS_B = "mptc-x4-b"
PORT = 40444
SIGNAL_PORT = 40445
PAYLOAD_C2S = 256 * 1024
PAYLOAD_S2C = 64 * 1024


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    for tool in ("ip", "tcpdump", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def sh(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------------------ topology


def _remove_namespaces() -> None:
    for ns in (NS_A, NS_B):  # names reserved for this test: leftovers can only be ours
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _setup(v6: bool, timestamps: bool) -> dict:
    _remove_namespaces()
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("sysctl", "-qw", "net.mptcp.enabled=1", ns=ns)
        sh("sysctl", "-qw", f"net.ipv4.tcp_timestamps={1 if timestamps else 0}", ns=ns)
        sh("ip", "mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2", ns=ns)
    addrs = {}
    for i in (1, 2):
        a, b = f"{NS_A}{i}", f"{NS_B}{i}"
        sh("ip", "link", "add", a, "netns", NS_A, "type", "veth", "peer", "name", b, "netns", NS_B)
        if v6:
            addrs[("a", i)], addrs[("b", i)] = f"fd44:{i}::1", f"fd44:{i}::2"
            for ns, dev, ad in ((NS_A, a, addrs[("a", i)]), (NS_B, b, addrs[("b", i)])):
                sh("ip", "addr", "add", f"{ad}/64", "dev", dev, "nodad", ns=ns)
        else:
            addrs[("a", i)], addrs[("b", i)] = f"10.44.{i}.1", f"10.44.{i}.2"
            sh("ip", "addr", "add", f"{addrs[('a', i)]}/24", "dev", a, ns=NS_A)
            sh("ip", "addr", "add", f"{addrs[('b', i)]}/24", "dev", b, ns=NS_B)
        sh("ip", "link", "set", a, "up", ns=NS_A)
        sh("ip", "link", "set", b, "up", ns=NS_B)
    if v6:
        # announce an IPv6 address without a port (ADD_ADDR6, 28 bytes) and one with a port (30 bytes):
        # the option-budget case
        sh("ip", "mptcp", "endpoint", "add", addrs[("b", 2)], "dev", f"{NS_B}2", "id", "7", "signal", ns=NS_B)
        sh("ip", "addr", "add", "fd44:2::3/64", "dev", f"{NS_B}2", "nodad", ns=NS_B)
        sh("ip", "mptcp", "endpoint", "add", "fd44:2::3", "dev", f"{NS_B}2", "id", "8", "port", str(SIGNAL_PORT),
           "signal", ns=NS_B)
    else:
        sh("ip", "mptcp", "endpoint", "add", addrs[("a", 2)], "dev", f"{NS_A}2", "id", "2", "subflow", ns=NS_A)
        sh("ip", "mptcp", "endpoint", "add", addrs[("b", 2)], "dev", f"{NS_B}2", "id", "5", "signal", ns=NS_B)
        sh("ip", "addr", "add", "10.44.2.3/24", "dev", f"{NS_B}2", ns=NS_B)
        sh("ip", "mptcp", "endpoint", "add", "10.44.2.3", "dev", f"{NS_B}2", "id", "6", "port", str(SIGNAL_PORT),
           "signal", ns=NS_B)
    return addrs


SERVER = textwrap.dedent("""
    import socket, subprocess, sys, time
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM, 262)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    want, got = int(sys.argv[3]), 0
    while got < want:
        d = c.recv(65536)
        if not d: break
        got += len(d)
    c.sendall(b"s" * int(sys.argv[4]))
    if sys.argv[5] != "-":  # withdraw an announced address: REMOVE_ADDR
        time.sleep(0.2)
        subprocess.run(["ip", "mptcp", "endpoint", "delete", "id", sys.argv[5]], check=True)
    c.settimeout(10)
    try:
        while c.recv(65536): pass
    except OSError:
        pass
    print("got", got, flush=True)
""")

CLIENT = textwrap.dedent("""
    import socket, struct, subprocess, sys, time
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    c = socket.socket(fam, socket.SOCK_STREAM, 262)
    c.connect((sys.argv[1], int(sys.argv[2])))
    time.sleep(1.0)  # joins and ADD_ADDR
    c.sendall(b"c" * int(sys.argv[3]))
    want, got = int(sys.argv[4]), 0
    while got < want:
        d = c.recv(65536)
        if not d: break
        got += len(d)
    if sys.argv[5] != "-":  # MP_PRIO
        subprocess.run(["ip", "mptcp", "endpoint", "change", "id", sys.argv[5], "backup"], check=True)
    time.sleep(0.6)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # MP_FASTCLOSE + MP_TCPRST
    print("got", got, flush=True)
""")


def _run_capture(tmp_path, v6: bool, timestamps: bool) -> list[str]:
    """Build the topology, run one transfer, return the pcap files (one per link)."""
    pcaps, dumps = [], []
    try:
        addrs = _setup(v6, timestamps)
        for i in (1, 2):
            pcap = str(tmp_path / f"link{i}{'-v6' if v6 else ''}{'-ts' if timestamps else ''}.pcap")
            p = subprocess.Popen(["ip", "netns", "exec", NS_A, "tcpdump", "-i", f"{NS_A}{i}", "-U", "-s", "256",
                                  "-w", pcap, "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            dumps.append(p)
            pcaps.append(pcap)
            line = p.stderr.readline()  # "listening on ..."
            assert "listening" in line, line
        server = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c", SERVER, addrs[("b", 1)],
                                   str(PORT), str(PAYLOAD_C2S), str(PAYLOAD_S2C), "-" if v6 else "5"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready", server.stderr.read()
            client = subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, "-c", CLIENT, addrs[("b", 1)],
                                     str(PORT), str(PAYLOAD_C2S), str(PAYLOAD_S2C), "-" if v6 else "2"],
                                    capture_output=True, text=True, timeout=60)
            assert client.returncode == 0, client.stderr
            assert client.stdout.split() == ["got", str(PAYLOAD_S2C)], client.stdout + client.stderr
            out, err = server.communicate(timeout=30)
            assert server.returncode == 0, err
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        time.sleep(0.3)
    finally:
        for p in dumps:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        _remove_namespaces()
    return pcaps


# ------------------------------------------------------------------------------------------ pcap reading


@dataclass
class Seg:
    frame: int  # 1-based frame number in its pcap (tshark's frame.number)
    pcap: str
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    payload_len: int
    mptcp: list[bytes] = field(default_factory=list)  # whole MPTCP options, in order
    optlen: int = 0  # all TCP option bytes
    kinds: list[int] = field(default_factory=list)  # TCP option kinds, in order (NOPs included)
    sack_blocks: int = 0

    @property
    def syn(self):
        return bool(self.flags & 0x02)

    @property
    def ack(self):
        return bool(self.flags & 0x10)

    @property
    def rst(self):
        return bool(self.flags & 0x04)


def _tcp_options(raw: bytes) -> tuple[list[bytes], list[int], int]:
    """(MPTCP options, all option kinds, SACK blocks) of a TCP option area."""
    out, kinds, sack, i = [], [], 0, 0
    while i < len(raw):
        kind = raw[i]
        kinds.append(kind)
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        n = raw[i + 1]
        assert n >= 2 and i + n <= len(raw), f"bad TCP option framing {raw.hex()}"
        if kind == 30:
            out.append(raw[i:i + n])
        elif kind == 5:
            sack = (n - 2) // 8
        i += n
    return out, kinds, sack


def read_pcap(path: str) -> list[Seg]:
    import ipaddress

    data = open(path, "rb").read()
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "pcap (not pcapng) expected"
    linktype = struct.unpack_from("<I", data, 20)[0]
    assert linktype == 1, f"Ethernet captures expected, got link type {linktype}"
    off, frame, segs = 24, 0, []
    while off + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from("<IIII", data, off)
        pkt = data[off + 16: off + 16 + caplen]
        off += 16 + caplen
        frame += 1
        ethertype = struct.unpack_from("!H", pkt, 12)[0]
        ip = pkt[14:]
        if ethertype == 0x0800:
            ihl = (ip[0] & 0xF) * 4
            total = struct.unpack_from("!H", ip, 2)[0]
            src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
            if ip[9] != 6:
                continue
            tcp, l4len = ip[ihl:], total - ihl
        elif ethertype == 0x86DD:
            if ip[6] != 6:
                continue
            src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
            tcp, l4len = ip[40:], struct.unpack_from("!H", ip, 4)[0]
        else:
            continue
        sport, dport = struct.unpack_from("!HH", tcp, 0)
        doff = (tcp[12] >> 4) * 4
        assert len(tcp) >= doff, "snaplen too short for the TCP header"
        mptcp, kinds, sack = _tcp_options(tcp[20:doff])
        segs.append(Seg(frame, path, src, dst, sport, dport, tcp[13], l4len - doff, mptcp, doff - 20, kinds, sack))
    return segs


# ------------------------------------------------------------------------------------------ tshark


def tshark_mptcp(path: str) -> dict[int, list[dict[str, list[str]]]]:
    """frame number -> tshark's MPTCP options of that frame, in order; each maps a field name (without the
    ``tcp.options.mptcp.`` prefix) to the list of its values (REMOVE_ADDR repeats ``addrid``)."""
    out = subprocess.run(["tshark", "-r", path, "-T", "json", "-J", "frame tcp",
                          "-o", "mptcp.analyze_mptcp:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    # tshark's JSON repeats keys ("mptcp" once per option): keep every pair, in order
    packets = json.loads(out, object_pairs_hook=lambda pairs: pairs)
    frames = {}
    for pkt in packets:
        found: list = []
        _find_mptcp(pkt, found)
        frames[int(_first(pkt, "frame.number"))] = found
    return frames


def _first(tree, key: str):
    if isinstance(tree, list):
        for item in tree:
            if isinstance(item, tuple):
                k, v = item
                if k == key:
                    return v
                got = _first(v, key)
            else:
                got = _first(item, key)
            if got is not None:
                return got
    return None


def _flatten(tree, into: dict) -> None:
    for k, v in tree:
        if isinstance(v, list) and v and isinstance(v[0], tuple):
            _flatten(v, into)
        elif not isinstance(v, list):
            into.setdefault(k.replace("tcp.options.mptcp.", ""), []).append(v)


def _find_mptcp(tree, found: list) -> None:
    if isinstance(tree, list):
        for item in tree:
            if isinstance(item, tuple):
                k, v = item
                if k == "mptcp" and isinstance(v, list):
                    fields: dict = {}
                    _flatten(v, fields)
                    found.append(fields)
                else:
                    _find_mptcp(v, found)
            else:
                _find_mptcp(item, found)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def v4_capture(tmp_path_factory):
    _need_root()
    pcaps = _run_capture(tmp_path_factory.mktemp("mptcp-v4"), v6=False, timestamps=True)
    return [(s, tshark_mptcp(pc)) for pc in pcaps for s in [read_pcap(pc)]]


def _all_options(capture):
    for segs, ts in capture:
        for seg in segs:
            theirs = ts.get(seg.frame, [])
            assert len(theirs) == len(seg.mptcp), f"{seg.pcap}#{seg.frame}: tshark saw {len(theirs)} MPTCP " \
                f"options, we saw {len(seg.mptcp)}"
            for raw, t in zip(seg.mptcp, theirs):
                yield seg, raw, t


def _one(t: dict, name: str) -> str:
    values = t[name]
    assert len(values) == 1, (name, values)
    return values[0]


def _int(t: dict, name: str) -> int:
    return int(_one(t, name), 0)


def _hexbytes(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def compare_with_tshark(o: MptcpOption, raw: bytes, t: dict) -> None:
    """Assert that our decode of ``raw`` and tshark's (``t``) agree on every field tshark shows."""
    assert _int(t, "tcp.option_len") == len(raw)
    assert _int(t, "subtype") == o.subtype
    st = o.subtype
    if st == Subtype.MP_CAPABLE:
        assert _int(t, "version") == o.version
        assert _int(t, "flags") == o.flags
        if o.present & Has.SNDR_KEY:
            assert _int(t, "sendkey") == int.from_bytes(o.sndr_key, "big")
        if o.present & Has.RCVR_KEY:
            assert _int(t, "recvkey") == int.from_bytes(o.rcvr_key, "big")
        if o.present & Has.DATA_LEN:
            assert _int(t, "datalvllen") == o.data_len
        if o.present & Has.CSUM:
            assert _int(t, "checksum") == o.csum
    elif st == Subtype.MP_JOIN:
        if o.present & Has.TOKEN:
            assert _int(t, "addrid") == o.addr_id
            assert _int(t, "recvtok") == o.token
            assert _int(t, "sendrand") == o.nonce
            assert _int(t, "backup.flag") == o.backup
        elif o.present & Has.THMAC:
            assert _int(t, "addrid") == o.addr_id
            assert _int(t, "sendtrunchmac") == int.from_bytes(o.thmac, "big")
            assert _int(t, "sendrand") == o.nonce
            assert _int(t, "backup.flag") == o.backup
        else:
            assert _hexbytes(_one(t, "sendhmac")) == o.hmac
    elif st == Subtype.DSS:
        assert _int(t, "flags") == o.flags
        assert _int(t, "datafin.flag") == o.data_fin
        if o.present & Has.DATA_ACK:
            assert _int(t, "rawdataack") == o.data_ack
        else:
            assert "rawdataack" not in t
        if o.present & Has.MAP:
            assert _int(t, "rawdataseqno") == o.data_seq
            assert _int(t, "subflowseqno") == o.subflow_seq
            assert _int(t, "datalvllen") == o.data_len
            if o.present & Has.CSUM:
                assert _int(t, "checksum") == o.csum
        else:
            assert "rawdataseqno" not in t
    elif st == Subtype.ADD_ADDR:
        assert _int(t, "echo") == o.echo
        assert _int(t, "addrid") == o.addr_id
        assert _one(t, "ipv4" if len(o.addr) == 4 else "ipv6") == str(o.ip)
        if o.present & Has.PORT:
            assert _int(t, "port") == o.port
        else:
            assert "port" not in t
        if o.present & Has.AHMAC:
            assert _int(t, "addaddrtrunchmac") == int.from_bytes(o.ahmac, "big")
        else:
            assert "addaddrtrunchmac" not in t
    elif st == Subtype.REMOVE_ADDR:
        assert [int(v) for v in t["addrid"]] == list(o.rm_ids)
    elif st == Subtype.MP_PRIO:
        assert _int(t, "backup.flag") == o.backup
    elif st == Subtype.MP_FASTCLOSE:
        assert _int(t, "recvkey") == int.from_bytes(o.rcvr_key, "big")
    elif st == Subtype.MP_TCPRST:
        assert [_one(t, f"flag_{c}.flag") in ("1", "true") for c in "UVWT"] == \
            [bool(o.flags & bit) for bit in (MPTCP_RST_U, MPTCP_RST_V, MPTCP_RST_W, MPTCP_RST_TRANSIENT)]
        assert _int(t, "rst_reason") == o.reason
    else:
        raise AssertionError(f"subtype {st} in a capture of Linux traffic")


# ------------------------------------------------------------------------------------------ tests


def test_every_option_parses_reencodes_and_matches_tshark(v4_capture):
    seen = set()
    count = 0
    for seg, raw, t in _all_options(v4_capture):
        o = parse_mptcp(raw)
        assert not o.present & Has.RAW, f"{seg.pcap}#{seg.frame}: kernel option did not parse: {raw.hex()}"
        assert encode_mptcp(o) == raw, f"{seg.pcap}#{seg.frame}: re-encoding differs"
        compare_with_tshark(o, raw, t)
        seen.add((Subtype(o.subtype).name, len(raw)))
        count += 1
    # the capture must have exercised every subtype Linux sends in this scenario
    names = {name for name, _ in seen}
    assert names >= {"MP_CAPABLE", "MP_JOIN", "DSS", "ADD_ADDR", "REMOVE_ADDR", "MP_PRIO", "MP_FASTCLOSE",
                     "MP_TCPRST"}, seen
    assert {("MP_CAPABLE", 4), ("MP_CAPABLE", 12), ("MP_CAPABLE", 20), ("MP_JOIN", 12), ("MP_JOIN", 16),
            ("MP_JOIN", 24), ("ADD_ADDR", 16), ("ADD_ADDR", 18), ("ADD_ADDR", 8), ("ADD_ADDR", 10)} <= seen, seen
    assert count > 50


def check_budget_accounting(capture) -> int:
    """Every captured segment's option length is what mptcrypt.tools.option_budget computes for its options."""
    checked = 0
    for segs, _ in capture:
        for seg in segs:
            if not seg.mptcp:
                continue
            expected = linux_options_len([len(o) for o in seg.mptcp], syn=seg.syn, ts=8 in seg.kinds,
                                         sack_perm=4 in seg.kinds, sack_blocks=seg.sack_blocks)
            assert seg.optlen == expected, f"{seg.pcap}#{seg.frame}: {seg.optlen} option bytes, budget says " \
                f"{expected} (kinds {seg.kinds})"
            assert seg.optlen <= 40
            checked += 1
    return checked


def test_option_budget_accounting_matches_kernel_segments(v4_capture):
    assert check_budget_accounting(v4_capture) > 50


def _keys(capture):
    """(client key, server key) from the MP_CAPABLE exchange."""
    synack = ack = None
    for seg, raw, _ in _all_options(capture):
        o = parse_mptcp(raw)
        if o.subtype == Subtype.MP_CAPABLE and seg.syn and seg.ack:
            synack = o
        elif o.subtype == Subtype.MP_CAPABLE and o.present & Has.RCVR_KEY:
            ack = o
    assert synack is not None and ack is not None, "no MP_CAPABLE SYN-ACK / ACK in the capture"
    assert ack.rcvr_key == synack.sndr_key, "third ACK must echo the server key"
    return ack.sndr_key, synack.sndr_key


def _from_client(seg: Seg) -> bool:
    return seg.src.startswith("10.44.") and seg.src.endswith(".1") or seg.src.endswith("::1")


def test_join_tokens_and_hmacs_recompute_from_captured_keys(v4_capture):
    key_c, key_s = _keys(v4_capture)
    syns, synacks, acks = {}, {}, {}
    for seg, raw, _ in _all_options(v4_capture):
        o = parse_mptcp(raw)
        if o.subtype != Subtype.MP_JOIN:
            continue
        flow = (seg.src, seg.sport, seg.dst, seg.dport) if _from_client(seg) else \
            (seg.dst, seg.dport, seg.src, seg.sport)
        if o.present & Has.TOKEN:
            syns[flow] = (seg, o)
        elif o.present & Has.THMAC:
            synacks[flow] = (seg, o)
        else:
            acks[flow] = (seg, o)
    assert syns and synacks and acks
    for flow, (seg, syn) in syns.items():
        receiver_key = key_s if _from_client(seg) else key_c
        assert syn.token == mptcp_token(receiver_key), f"join SYN {flow}: token is not mptcp_token(receiver key)"
    checked = 0
    for flow, (seg, synack) in synacks.items():
        syn_seg, syn = syns[flow]
        # host A = the join's initiator, B = the responder
        key_a, key_b = (key_c, key_s) if _from_client(syn_seg) else (key_s, key_c)
        assert synack.thmac == join_hmac(key_b, key_a, synack.nonce, syn.nonce)[:MPTCPOPT_THMAC_LEN]
        assert flow in acks, f"join {flow} has a SYN-ACK but no third ACK in the capture"
        ack = acks[flow][1]
        assert ack.hmac == join_hmac(key_a, key_b, syn.nonce, synack.nonce)[:MPTCPOPT_HMAC_LEN]
        checked += 1
    assert checked >= 2


def test_add_addr_hmac_and_fastclose_key_and_idsn(v4_capture):
    key_c, key_s = _keys(v4_capture)
    announced = 0
    first_dsn = {}
    for seg, raw, _ in _all_options(v4_capture):
        o = parse_mptcp(raw)
        sender, receiver = (key_c, key_s) if _from_client(seg) else (key_s, key_c)
        if o.subtype == Subtype.ADD_ADDR and not o.echo:
            port = o.port if o.present & Has.PORT else 0
            assert o.ahmac == add_addr_hmac(sender, receiver, o.addr_id, o.addr, port), \
                f"ADD_ADDR id {o.addr_id} {o.ip}:{port}: HMAC does not recompute"
            announced += 1
        elif o.subtype == Subtype.MP_FASTCLOSE:
            assert o.rcvr_key == receiver
        elif o.subtype == Subtype.DSS and o.present & Has.DSN64:
            side = _from_client(seg)
            first_dsn[side] = min(first_dsn.get(side, 1 << 64), o.data_seq)
    assert announced >= 2
    # the first data byte of each direction has DSN = IDSN + 1 (RFC 8684 §3.3.1)
    assert first_dsn[True] == (mptcp_idsn(key_c) + 1) % (1 << 64)
    assert first_dsn[False] == (mptcp_idsn(key_s) + 1) % (1 << 64)


@pytest.mark.parametrize("timestamps", [False, True], ids=["ts-off", "ts-on"])
def test_add_addr_v6_with_port_needs_timestamps_off(tmp_path, timestamps):
    """docs/option-budget.md: ADD_ADDR v6 + port + HMAC is 30 bytes (32 with Linux's NOP padding); beside
    timestamps (12) it does not fit in 40 and Linux never sends it; without timestamps it does. ADD_ADDR v6
    without a port (28) fits either way. Also checks the IPv6 ADD_ADDR HMACs against the kernel's."""
    _need_root()
    pcaps = _run_capture(tmp_path, v6=True, timestamps=timestamps)
    capture = [(read_pcap(pc), tshark_mptcp(pc)) for pc in pcaps]
    assert check_budget_accounting(capture) > 10
    key_c, key_s = _keys(capture)
    lengths = []
    for seg, raw, t in _all_options(capture):
        o = parse_mptcp(raw)
        assert encode_mptcp(o) == raw
        compare_with_tshark(o, raw, t)
        if o.subtype == Subtype.ADD_ADDR and not o.echo:
            sender, receiver = (key_c, key_s) if _from_client(seg) else (key_s, key_c)
            assert o.ahmac == add_addr_hmac(sender, receiver, o.addr_id, o.addr, o.port)
            lengths.append(len(raw))
    assert 28 in lengths, f"expected an ADD_ADDR v6+HMAC without port (28 bytes), got {lengths}"
    if timestamps:
        assert 30 not in lengths, "Linux sent ADD_ADDR v6+port+HMAC beside timestamps: budget table is wrong"
    else:
        assert 30 in lengths, f"expected an ADD_ADDR v6+port+HMAC (30 bytes) with timestamps off, got {lengths}"
