"""The TCP option budget table (docs/option-budget.md) and its accounting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mptcrypt.constants import MAC_OPTION_LEN, TCP_MAX_OPTION_SPACE, TCPOPT_MPTCP, TCPOPT_NOP, TCPOPT_SACK_PERM
from mptcrypt.tools import option_budget as ob
from mptcrypt.wire.compact import compact_option_area
from mptcrypt.wire.mptcp import Subtype, encode_mptcp, parse_mptcp
from mptcrypt.wire.tcp import ACK, PSH, RST, parse_options

from pktkit import C_ADDR, S_ADDR, decode, segment as tcp_segment

DOC = Path(__file__).resolve().parents[2] / "docs" / "option-budget.md"


def _case(note: str, segment: str | None = None) -> ob.Case:
    (case,) = [c for c in ob.CASES if c.note == note and segment in (None, c.segment)]
    return case


def test_doc_holds_the_generated_table():
    assert ob.doc_table(DOC.read_text(encoding="utf-8")) == ob.render_table(), \
        "docs/option-budget.md is stale: run python -m mptcrypt.tools.option_budget --update docs/option-budget.md"


def test_module_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "mptcrypt.tools.option_budget"], check=True, capture_output=True,
                         text=True).stdout
    assert out == ob.render_table()


def test_fits_with_mac_boundaries():
    assert MAC_OPTION_LEN == 12 and TCP_MAX_OPTION_SPACE == 40
    assert ob.fits_with_mac(0)
    assert ob.fits_with_mac(28)
    assert not ob.fits_with_mac(29)
    assert not ob.fits_with_mac(40)


@pytest.mark.parametrize("case", ob.CASES, ids=lambda c: f"{c.segment}:{c.note}")
def test_every_case_is_a_real_option_block(case):
    for ts in (True, False):
        block = case.options(ts)
        assert len(block) % 4 == 0, "Linux writes options in 32-bit words"
        opts = parse_options(block)  # the project's TCP option parser accepts it
        mptcp = [bytes((o.kind, len(o.data) + 2)) + o.data for o in opts if o.kind == TCPOPT_MPTCP]
        assert [parse_mptcp(m) for m in mptcp] == list(case.mptcp)
        assert [encode_mptcp(o) for o in case.mptcp] == mptcp
        assert all(o.kind in (TCPOPT_NOP, TCPOPT_MPTCP, 2, 3, 4, 8) for o in opts)
        assert case.used(ts) == ob.linux_options_len([len(m) for m in mptcp], syn=case.syn, ts=ts, sack_perm=ts)


def test_key_figures():
    data = _case("DSS, 64-bit ACK + 64-bit map (26 + 2 NOPs): every Linux data segment")
    # FACTS.md: 0 free with TS; the compact form (TS 10 + DSS 18) leaves the MAC its 12
    assert data.used(ts=True) == 40 and len(compact_option_area(data.options(ts=True))) == 28
    assert data.outcome() == ob.Outcome((), (compact_option_area(data.options(ts=True)),), compact=True)
    v6port = _case("ADD_ADDR v6 + port + HMAC (30 + 2 NOPs)")
    assert not v6port.sent_by_linux() and v6port.used(ts=False) == 32
    assert v6port.outcome(ts=False).steps == (ob.Step.DROP,)
    v6 = _case("ADD_ADDR v6 + HMAC")
    assert v6.outcome().steps == (ob.Step.DROP_TS,) and [len(a) for a in v6.outcome().sent] == [28]
    assert _case("MP_JOIN ACK").outcome().steps == (ob.Step.DROP_TS,)
    assert _case("DSS, 64-bit data ACK").outcome() == ob.Outcome((), (_case("DSS, 64-bit data ACK").options(True),),
                                                                 compact=False)
    assert _case("DSS + REMOVE_ADDR, 8 ids").outcome(ts=False).steps == (ob.Step.SPLIT,)
    beside_data = _case("DSS + REMOVE_ADDR, 1 id", "data")
    assert not beside_data.sent_by_linux() and beside_data.outcome(ts=False).steps == ()  # the compact form fits


def test_handshake_options_and_timestamps():
    """HELLO and PKCONF (default cipher list) fit beside TS; NEXTK1 / NEXTK2 take its place (the peer's daemon
    restores it for a join, test_engine_handshake; a resumed MPTCP connection runs without); a PKCONF of more than
    4 ciphers pushes TS out too (not restored)."""
    for case in (c for c in ob.CASES if c.syn):
        area, overflow = case.handshake_area()
        assert not overflow and len(area) <= TCP_MAX_OPTION_SPACE
        name, _, restored = case.handshake
        assert ob.has_timestamps(area) == (name in ("HELLO", "PKCONF"))
        assert restored == (name.startswith("NEXTK") and "join" in case.segment)  # joins only (protocol §6)
        assert TCPOPT_SACK_PERM in [o.kind for o in parse_options(area)]  # SACK-permitted stays
    synack = _case("MP_CAPABLE SYN-ACK").options(ts=True)
    assert ob.has_timestamps(ob.syn_with_option(synack, ob.OPTLEN_PKCONF + 1)[0])  # a fourth cipher: 40 bytes
    assert not ob.has_timestamps(ob.syn_with_option(synack, ob.OPTLEN_PKCONF + 2)[0])  # a fifth
    area, overflow = ob.syn_with_option(synack, ob.OPTLEN_PKCONF_MAX)
    assert not overflow and not ob.has_timestamps(area)


def test_the_daemon_never_sends_more_than_40_option_bytes():
    for case in (c for c in ob.CASES if not c.syn):
        for ts in (True, False):
            if ts and not case.sent_by_linux():
                continue  # Linux does not write it beside timestamps
            plain = case.outcome(ts)
            for o in (plain, case.outcome(ts, sack=True)):
                assert all(len(a) + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE for a in o.sent)
                assert len(o.sent) == {ob.Step.DROP: 0, ob.Step.SPLIT: 2}.get(o.steps[-1] if o.steps else None, 1)
            # SACK blocks change nothing else: trimmed first, the rest as without them
            assert [s for s in case.outcome(ts, sack=True).steps if s is not ob.Step.TRIM_SACK] == list(plain.steps)
            if ob.Step.SPLIT in plain.steps:  # exactly the suboptions the case marks movable go to the pure ACK
                moved = [o for o in parse_options(plain.sent[1]) if o.kind == TCPOPT_MPTCP]
                assert [parse_mptcp(o.encode()) for o in moved] == [case.mptcp[i] for i in case.movable]
    sent_with_ts = [c for c in ob.CASES if not c.syn and c.sent_by_linux()]
    # beside timestamps nothing is split or dropped; without them, what Linux also sends beside them fits as it is
    assert not any({ob.Step.SPLIT, ob.Step.DROP} & set(c.outcome().steps) for c in sent_with_ts)
    assert all(c.outcome(ts=False) == ob.Outcome((), (c.options(ts=False),), False) for c in sent_with_ts)
    # only ADD_ADDR v6 + port + HMAC is dropped, and Linux sends it only without timestamps
    dropped = [c for c in ob.CASES if not c.syn and ob.Step.DROP in c.outcome(ts=False).steps]
    assert [c.mptcp[0].subtype for c in dropped] == [Subtype.ADD_ADDR] and not dropped[0].sent_by_linux()


def test_linux_sack_blocks():
    assert [ob.linux_sack_blocks(n) for n in (0, 4, 12, 16, 20, 24, 28, 29, 40)] == [4, 4, 3, 2, 2, 1, 1, 0, 0]


_PAYLOAD_SEGMENTS = ("data", "first data")


@pytest.mark.parametrize("sack", [False, True])
@pytest.mark.parametrize("case", [c for c in ob.CASES if not c.syn], ids=lambda c: f"{c.segment}:{c.note}")
def test_the_engine_does_what_the_table_says(case, sack):
    """The client engine, given the kernel segment of the row, puts on the wire the option areas (and bumps the
    counters) that protect_options computed: the table describes the data path, not a model of it."""
    from test_engine_handshake import CISN, SISN, mptcp_pair

    ts = case.sent_by_linux()
    want = case.outcome(ts, sack)
    area = case.options(ts, ob.linux_sack_blocks(case.used(ts)) if sack else 0)
    flags = RST | ACK if case.segment == "RST" else ACK | PSH if case.segment in _PAYLOAD_SEGMENTS else ACK
    payload = b"d" if case.segment in _PAYLOAD_SEGMENTS else b""
    pair = mptcp_pair()
    before, stats = len(pair.wire), dict(pair.eng["c"].stats())
    got = pair.send("c", tcp_segment(C_ADDR, 40000, S_ADDR, 5000, CISN + 1, SISN + 1, flags, parse_options(area),
                                     payload))
    wire = [decode(p)[1].options for p in pair.wire[before:]]
    assert [w[:-MAC_OPTION_LEN] for w in wire] == list(want.sent)
    assert all(w[-MAC_OPTION_LEN] == 253 for w in wire) and len(got) == len(want.sent)
    after = pair.eng["c"].stats()
    for step in ob.Step:
        assert after[step.value] - stats[step.value] == want.steps.count(step), step


def test_update_rewrites_only_the_table(tmp_path):
    doc = tmp_path / "budget.md"
    doc.write_text(f"intro\n\n{ob.DOC_BEGIN}\nstale\n{ob.DOC_END}\n\noutro\n", encoding="utf-8")
    ob.main(["--update", str(doc)])
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n\n") and text.endswith(f"{ob.DOC_END}\n\noutro\n")
    assert ob.doc_table(text) == ob.render_table()
