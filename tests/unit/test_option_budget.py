"""The TCP option budget table (docs/option-budget.md) and its accounting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mptcrypt.constants import MAC_OPTION_LEN, TCP_MAX_OPTION_SPACE, TCPOPT_MPTCP, TCPOPT_NOP
from mptcrypt.tools import option_budget as ob
from mptcrypt.wire.mptcp import Subtype, encode_mptcp, parse_mptcp
from mptcrypt.wire.tcp import parse_options

DOC = Path(__file__).resolve().parents[2] / "docs" / "option-budget.md"


def _case(note: str) -> ob.Case:
    (case,) = [c for c in ob.CASES if c.note == note]
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
    assert (data.used(ts=True), data.used(ts=False)) == (40, 28)  # FACTS.md: 0 free with TS; MAC fits without
    assert data.handling() is ob.Handling.MAC
    v6port = _case("ADD_ADDR v6 + port + HMAC (30 + 2 NOPs)")
    assert (v6port.used(ts=True), v6port.used(ts=False)) == (44, 32)
    assert v6port.handling() is ob.Handling.DROP
    v6 = _case("ADD_ADDR v6 + HMAC")
    assert v6.used(ts=False) + MAC_OPTION_LEN == TCP_MAX_OPTION_SPACE and v6.handling() is ob.Handling.MAC
    assert _case("MP_JOIN ACK").used(ts=False) == 24
    assert _case("MP_CAPABLE ACK + data + checksum").used(ts=False) == 24
    assert _case("MP_JOIN SYN").handling() is ob.Handling.STRIP_TS
    assert _case("MP_CAPABLE SYN").handling() is ob.Handling.HANDSHAKE
    assert _case("DSS + MP_PRIO").handling() is ob.Handling.SPLIT


def test_handling_never_exceeds_40_bytes():
    assert {case.handling() for case in ob.CASES} >= {ob.Handling.MAC, ob.Handling.SPLIT}  # the loop checks both
    for case in ob.CASES:
        used, moved = case.used(ts=False), case.movable_len()
        assert used <= TCP_MAX_OPTION_SPACE, "Linux never writes more than 40 option bytes"
        h = case.handling()
        if h is ob.Handling.MAC:
            assert used + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE
        elif h is ob.Handling.SPLIT:
            assert used - moved + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE  # the segment, without the signal
            assert moved + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE  # the daemon-made pure ACK
        elif h is ob.Handling.DROP:
            assert used + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE
    # only ADD_ADDR v6 + port + HMAC has to be dropped
    dropped = [c for c in ob.CASES if c.handling() is ob.Handling.DROP]
    assert [c.mptcp[0].subtype for c in dropped] == [Subtype.ADD_ADDR]


def test_handling_for():
    assert ob.handling_for(28) is ob.Handling.MAC
    assert ob.handling_for(32, movable_len=4) is ob.Handling.SPLIT
    assert ob.handling_for(32) is ob.Handling.DROP
    assert ob.handling_for(40, movable_len=4) is ob.Handling.DROP


def test_update_rewrites_only_the_table(tmp_path):
    doc = tmp_path / "budget.md"
    doc.write_text(f"intro\n\n{ob.DOC_BEGIN}\nstale\n{ob.DOC_END}\n\noutro\n", encoding="utf-8")
    ob.main(["--update", str(doc)])
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n\n") and text.endswith(f"{ob.DOC_END}\n\noutro\n")
    assert ob.doc_table(text) == ob.render_table()
