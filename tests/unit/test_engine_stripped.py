"""core/stripped.py: a middlebox strips the MAC option from a protected connection's segments (TCPOPTSTRIP turns
the option into NOPs): after STRIP_LIMIT in-sequence MAC-less segments the flow is reset, both kernels get a RST,
the reason shows in `sessions`; a blind injection or a verified segment in between never triggers it."""

from __future__ import annotations

from mptcrypt.constants import MAC_OPTION_LEN
from mptcrypt.core.events import Verdict
from mptcrypt.core.stripped import REASON, STRIP_LIMIT
from mptcrypt.wire.rewrite import with_option_area
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import ACK, PSH, RST

from pktkit import segment
from test_engine_stream import established


def strip(packet: bytes) -> bytes:
    """What `TCPOPTSTRIP --strip-options 253` does to a protected segment: the MAC option's bytes become NOPs."""
    seg = parse_segment(packet)
    opts = seg.option_bytes()
    assert seg.has_mac()
    return with_option_area(seg, opts[:-MAC_OPTION_LEN] + b"\x01" * MAC_OPTION_LEN)


def on_wire(pair, side, packet):
    res = pair.eng[side].handle(packet, True, pair.now)
    assert res.verdict is Verdict.ACCEPT
    return res.packet


def data(c, s, n, size=100):
    return segment(c, 40000, s, 5000, 101 + n * size, 901, ACK | PSH, [], bytes([n]) * size)


def test_mac_less_segments_in_a_row_reset_both_kernels_with_the_reason():
    pair, c, s = established()
    server = pair.eng["s"]
    for n in range(STRIP_LIMIT - 1):
        assert server.handle(strip(on_wire(pair, "c", data(c, s, n))), False, pair.now).verdict is Verdict.DROP
    res = server.handle(strip(on_wire(pair, "c", data(c, s, STRIP_LIMIT - 1))), False, pair.now)
    assert res.verdict is Verdict.DROP and len(res.inject) == 2
    to_kernel, to_peer = (parse_segment(p) for p in res.inject)
    assert to_kernel.flags & RST and (to_kernel.src, to_kernel.dst) == (c, s)
    assert to_kernel.seq == 101  # the server kernel's rcv_nxt: nothing after the handshake was verified
    assert to_peer.flags & RST and to_peer.has_mac() and (to_peer.src, to_peer.dst) == (s, c)
    row = [r for r in server.sessions() if r["local"].endswith(":5000")][0]
    assert row["state"] == "failed" and row["reason"] == REASON
    assert server.stats()["stripped_resets"] == 1
    # the protected RST, not stripped (only the other direction is): the client's kernel gets it
    res = pair.eng["c"].handle(res.inject[1], False, pair.now)
    assert res.verdict is Verdict.ACCEPT and parse_segment(res.packet).flags & RST


def test_both_directions_stripped_the_peer_resets_too():
    pair, c, s = established()
    server, client = pair.eng["s"], pair.eng["c"]
    to_client = []
    for n in range(STRIP_LIMIT + 4):  # the client kernel keeps (re)sending; every answer is stripped as well
        res = server.handle(strip(on_wire(pair, "c", data(c, s, n))), False, pair.now)
        to_client += [p for p in res.inject if parse_segment(p).dst == c and parse_segment(p).has_mac()]
    assert len(to_client) >= STRIP_LIMIT  # the first reset and one protected RST per later segment
    results = [client.handle(strip(p), False, pair.now) for p in to_client]
    assert any(len(r.inject) == 2 for r in results)
    row = [r for r in client.sessions() if r["remote"].endswith(":5000")][0]
    assert row["reason"] == REASON and client.stats()["stripped_resets"] == 1


def test_blind_injections_and_verified_segments_in_between_never_reset():
    pair, c, s = established()
    server = pair.eng["s"]
    far = segment(c, 40000, s, 5000, 101 + (1 << 30), 901, ACK | PSH, [], b"x" * 100)
    ahead = segment(c, 40000, s, 5000, 101, 901 + (1 << 20), ACK | PSH, [], b"x" * 100)  # acks what we never sent
    for _ in range(3 * STRIP_LIMIT):
        assert server.handle(far, False, pair.now).verdict is Verdict.DROP
        assert server.handle(ahead, False, pair.now).verdict is Verdict.DROP
    for n in range(4 * STRIP_LIMIT):
        wire = on_wire(pair, "c", data(c, s, n))
        if n % STRIP_LIMIT == 0:  # one segment in STRIP_LIMIT arrives whole
            assert server.handle(wire, False, pair.now).verdict is Verdict.ACCEPT
        else:
            assert server.handle(strip(wire), False, pair.now).verdict is Verdict.DROP
    assert server.stats()["stripped_resets"] == 0
    assert [r for r in server.sessions() if r["local"].endswith(":5000")][0]["state"] == "encrypting"



def test_a_handshake_out_of_retries_resets_the_kernel_instead_of_hanging():
    """INIT1 rides with mptcrypt's option: a middlebox stripping it from data segments keeps the handshake from
    finishing. When INIT1 runs out of retries the client kernel gets a RST at its rcv_nxt and `sessions` says why."""
    from mptcrypt.core.config import Config
    from mptcrypt.core.engine import Engine
    from mptcrypt.wire.tcp import SYN
    from pktkit import C_ADDR, S_ADDR, syn_options

    client, server = Engine(Config(init_retries=2, init_rto=0.2)), Engine()
    syn = client.handle(segment(C_ADDR, 40000, S_ADDR, 5000, 100, 0, SYN, syn_options()), True, 0.0).packet
    server.handle(syn, False, 0.0)
    synack = segment(S_ADDR, 5000, C_ADDR, 40000, 900, 101, SYN | ACK, syn_options(ts=False))
    client.handle(server.handle(synack, True, 0.0).packet, False, 0.0)  # PKCONF: INIT1 goes out (and is lost)
    out = []
    for now in (0.25, 0.7, 1.5, 3.5):  # INIT1 twice more, then the give-up
        out += client.handle_timer(now)
    resets = [parse_segment(p) for p in out if parse_segment(p).flags & RST]
    assert len(resets) == 1 and (resets[0].src, resets[0].dst) == (S_ADDR, C_ADDR) and resets[0].seq == 901
    row = client.sessions()[0]
    assert row["state"] == "failed" and "middlebox strips mptcrypt options" in row["reason"]
