"""The 40-byte TCP option budget of every MPTCP option combination Linux emits, and what the mptcrypt daemon does
to fit its 12-byte MAC option beside it. ``python -m mptcrypt.tools.option_budget`` prints the table that is in
docs/option-budget.md (a unit test keeps the two identical).

Every figure is the length of real option bytes: each case builds the TCP option block Linux writes for it
(``tcp_options_write`` + ``mptcp_write_options``: MSS, NOP+WS, SACK-permitted packed with the timestamp or
behind two NOPs, NOP NOP TS, NOP NOP SACK, and each MPTCP suboption padded with NOPs to a 32-bit word) using the
codec of :mod:`mptcrypt.wire.mptcp`, and measures it. The accounting mirrors Linux ``net/mptcp/options.c``
(``mptcp_established_options`` and friends) and ``tcp_established_options``: ADD_ADDR goes only on a pure ACK and
replaces the DSS there; REMOVE_ADDR, MP_PRIO and MP_FAIL ride beside a DSS when the room left after the
timestamp allows; a suboption that does not fit is not written and the kernel tries again on a later segment;
SACK blocks take what the MPTCP options leave.

What the daemon does is computed by running the project's own functions on those bytes in the order the data
path runs them (``crypto/segment`` seal, then ``core/datapath._no_room``): the compact form
(:func:`mptcrypt.wire.compact.compact_option_area`), SACK trimming, removing the timestamps option, moving
signals to a pure ACK of the daemon's own (:mod:`mptcrypt.wire.rewrite`); for SYNs, ``rewrite.with_options``
adding the handshake option.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from mptcrypt.constants import (
    DEFAULT_PUB_CIPHERS,
    EXP_HEADER_LEN,
    MAC_OPTION_LEN,
    TCP_MAX_OPTION_SPACE,
    TCPOPT_EXP,
    TCPOPT_MSS,
    TCPOPT_NOP,
    TCPOPT_SACK,
    TCPOPT_SACK_PERM,
    TCPOPT_TIMESTAMP,
    TCPOPT_WSCALE,
)
from mptcrypt.core.datapath import SPLIT_SUBTYPES
from mptcrypt.wire import rewrite
from mptcrypt.wire.compact import compact_option_area
from mptcrypt.wire.ip import build_ip_header
from mptcrypt.wire.messages import (
    MAX_PKCONF_CIPHERS,
    OPTLEN_HELLO,
    OPTLEN_NEXTK1_JOIN,
    OPTLEN_NEXTK1_RESUME,
    OPTLEN_NEXTK2,
)
from mptcrypt.wire.mptcp import (
    MPTCP_ADD_ADDR_HMAC_LEN,
    MPTCP_RM_IDS_MAX,
    MPTCPOPT_HMAC_LEN,
    MPTCPOPT_THMAC_LEN,
    MptcpOption,
    encode_mptcp,
)
from mptcrypt.wire.segment import Segment, parse_segment
from mptcrypt.wire.tcp import (
    ACK,
    SYN,
    TCPOLEN_MSS,
    TCPOLEN_SACK_BLOCK,
    TCPOLEN_SACK_PERM,
    TCPOLEN_TIMESTAMP,
    TCPOLEN_WSCALE,
    TCPHeader,
    parse_options,
)

# Linux tcp_output.c writes: MSS (4); NOP + window scale (3); SACK-permitted (2) + timestamp (10) on a SYN, or
# NOP NOP timestamp, or NOP NOP SACK-permitted without timestamps; NOP NOP SACK (2 + 8 per block).

_KEY = bytes(8)
_V4 = bytes(4)
_V6 = bytes(16)
_PORT = 40445


def align4(n: int) -> int:
    return (n + 3) & ~3


def fits_with_mac(options_len: int) -> bool:
    """True when a segment whose TCP options take ``options_len`` bytes has room for the MAC option."""
    return options_len + MAC_OPTION_LEN <= TCP_MAX_OPTION_SPACE


def padded(option: bytes) -> bytes:
    """An option followed by NOPs up to a 32-bit boundary, as Linux writes each MPTCP suboption."""
    return option + bytes((TCPOPT_NOP,)) * (align4(len(option)) - len(option))


def plain_tcp_options(*, syn: bool, ts: bool, sack_perm: bool, sack_blocks: int = 0) -> bytes:
    """The non-MPTCP options Linux writes on a SYN / SYN-ACK (``syn``) or an established segment."""
    nop2 = bytes((TCPOPT_NOP, TCPOPT_NOP))
    sack_perm_opt = struct.pack("!BB", TCPOPT_SACK_PERM, TCPOLEN_SACK_PERM)
    out = b""
    if syn:
        out += struct.pack("!BBH", TCPOPT_MSS, TCPOLEN_MSS, 1460)
    if ts:
        out += (sack_perm_opt if syn and sack_perm else nop2) + struct.pack("!BBII", TCPOPT_TIMESTAMP,
                                                                            TCPOLEN_TIMESTAMP, 1, 0)
    elif syn and sack_perm:
        out += nop2 + sack_perm_opt
    if syn:
        out += bytes((TCPOPT_NOP,)) + struct.pack("!BBB", TCPOPT_WSCALE, TCPOLEN_WSCALE, 7)
    if sack_blocks:
        out += nop2 + struct.pack("!BB", TCPOPT_SACK, 2 + TCPOLEN_SACK_BLOCK * sack_blocks) + \
            bytes(TCPOLEN_SACK_BLOCK * sack_blocks)
    return out


def linux_options_len(mptcp_lengths, *, syn: bool, ts: bool, sack_perm: bool, sack_blocks: int = 0) -> int:
    """Length of the TCP option block Linux writes: plain options plus each MPTCP suboption padded to 4."""
    return len(plain_tcp_options(syn=syn, ts=ts, sack_perm=sack_perm, sack_blocks=sack_blocks)) + \
        sum(align4(n) for n in mptcp_lengths)


OPTLEN_PKCONF = EXP_HEADER_LEN + 1 + len(DEFAULT_PUB_CIPHERS)  # header, type, the default cipher list
OPTLEN_PKCONF_MAX = EXP_HEADER_LEN + 1 + MAX_PKCONF_CIPHERS  # header, type, up to MAX_PKCONF_CIPHERS ids
MAC_ROOM = TCP_MAX_OPTION_SPACE - MAC_OPTION_LEN  # what the kernel's options may take beside the MAC: 28
TCP_NUM_SACKS = 4  # Linux include/linux/tcp.h: the most SACK blocks it reports
TCPOLEN_SACK_BASE_ALIGNED = 4  # NOP NOP kind length


def linux_sack_blocks(used: int) -> int:
    """How many SACK blocks Linux writes on an established segment whose other options take ``used`` bytes, when
    it has out-of-order data to report (``tcp_established_options``: SACK gets what MPTCP left, if one block fits)."""
    left = TCP_MAX_OPTION_SPACE - used
    if left < TCPOLEN_SACK_BASE_ALIGNED + TCPOLEN_SACK_BLOCK:
        return 0
    return min(TCP_NUM_SACKS, (left - TCPOLEN_SACK_BASE_ALIGNED) // TCPOLEN_SACK_BLOCK)


# --- what the daemon does: the project's own functions on the bytes -------------------------------------------
_SRC, _DST = bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))


def _segment(area: bytes, flags: int = ACK) -> Segment:
    """An IPv4 segment without payload whose option area is ``area``."""
    tcp = TCPHeader(_PORT, _PORT, 1, 1, flags, 65535, options=area).encode(b"", _SRC, _DST)
    return parse_segment(build_ip_header(_SRC, _DST, len(tcp)) + tcp)


def sealed_area(area: bytes) -> bytes | None:
    """The option area ``seal`` puts beside the MAC for kernel options ``area`` (``crypto/segment``): the area
    itself when the MAC fits beside it, else its compact form when the MAC fits beside that, else None."""
    if fits_with_mac(len(area)):
        return area
    compact = compact_option_area(area)
    return compact if fits_with_mac(len(compact)) else None


class Step(Enum):
    """What the sending daemon does, beyond sealing, to an established segment whose options leave no room for the
    MAC even in their compact form (``core/datapath._no_room``, in this order; the counter it bumps)."""

    TRIM_SACK = "sack_trimmed"
    DROP_TS = "timestamps_removed"
    SPLIT = "signals_split"
    DROP = "option_overflow"


@dataclass(frozen=True)
class Outcome:
    """What the daemon sends for one kernel segment of a protected subflow."""

    steps: tuple[Step, ...]
    sent: tuple[bytes, ...]  # the option areas of the segments it sends, MAC option not counted; () when dropped
    compact: bool  # the kernel's options did not leave room for the MAC as they were


def protect_options(area: bytes) -> Outcome:
    """Run the data path's decisions on kernel option area ``area``: seal (compact form if need be), else trim SACK
    blocks, else remove the timestamps option, else move REMOVE_ADDR / MP_PRIO / MP_FAIL to a pure ACK, else drop."""
    steps: list[Step] = []
    compact = not fits_with_mac(len(area))
    while True:
        sealed = sealed_area(area)
        if sealed is not None:
            return Outcome(tuple(steps), (sealed,), compact)
        short = compact_option_area(area)
        trimmed = rewrite.trim_sack(short, MAC_ROOM)
        if trimmed is not None:
            steps.append(Step.TRIM_SACK)
            area = trimmed
            continue
        untimed = rewrite.without_kind(short, TCPOPT_TIMESTAMP)
        if untimed is not None:
            steps.append(Step.DROP_TS)
            area = untimed
            continue
        split = rewrite.split_signals(_segment(area), SPLIT_SUBTYPES)
        if split is None or MAC_OPTION_LEN + max(len(split[0]), len(split[1])) > TCP_MAX_OPTION_SPACE:
            return Outcome((*steps, Step.DROP), (), compact)
        return Outcome((*steps, Step.SPLIT), tuple(sealed_area(a) for a in split), compact)


def syn_with_option(block: bytes, length: int) -> tuple[bytes, bool]:
    """The option area of a SYN / SYN-ACK with kernel options ``block`` once the daemon adds a ``length``-byte
    mptcrypt option (``rewrite.with_options``: the alignment NOPs go first, then the timestamps option), and
    whether the option was left out for lack of room."""
    placeholder = bytes((TCPOPT_EXP, length)) + bytes(length - 2)
    packet, overflow = rewrite.with_options(_segment(block, SYN), add=placeholder)
    return parse_segment(packet).option_bytes(), overflow


def has_timestamps(area: bytes) -> bool:
    return any(o.kind == TCPOPT_TIMESTAMP for o in parse_options(area))


def sack_blocks(area: bytes) -> int:
    return sum(len(o.data) // TCPOLEN_SACK_BLOCK for o in parse_options(area) if o.kind == TCPOPT_SACK)


@dataclass(frozen=True)
class Case:
    """One option combination Linux emits."""

    segment: str  # which segment carries it
    mptcp: tuple[MptcpOption, ...]  # MPTCP suboptions in Linux's write order
    syn: bool = False  # SYN / SYN-ACK: MSS, WS and SACK-permitted too
    movable: tuple[int, ...] = ()  # indexes into ``mptcp`` of the suboptions a split moves to a pure ACK
    note: str = ""
    # SYN / SYN-ACK: (mptcrypt option a daemon adds, its length, does the receiving daemon give its kernel a
    # timestamps option back when the option left none on the wire: core/join.py restore_ts)
    handshake: tuple[str, int, bool] | None = None

    def mptcp_bytes(self) -> list[bytes]:
        return [padded(encode_mptcp(o)) for o in self.mptcp]

    def options(self, ts: bool, sack_blocks: int = 0) -> bytes:
        """The whole option block, as Linux writes it, with or without timestamps (and SACK-permitted)."""
        return plain_tcp_options(syn=self.syn, ts=ts, sack_perm=ts, sack_blocks=sack_blocks) + \
            b"".join(self.mptcp_bytes())

    def used(self, ts: bool) -> int:
        return len(self.options(ts))

    def sent_by_linux(self) -> bool:
        """Linux writes this combination beside timestamps (else the suboption waits: note 1 of the doc)."""
        return self.used(ts=True) <= TCP_MAX_OPTION_SPACE

    def outcome(self, ts: bool = True, sack: bool = False) -> Outcome:
        """What the daemon sends for this established segment, with or without timestamps; ``sack``: with as many
        SACK blocks as Linux puts in the room left."""
        blocks = linux_sack_blocks(self.used(ts)) if sack else 0
        return protect_options(self.options(ts, blocks))

    def handshake_area(self) -> tuple[bytes, bool]:
        """SYN / SYN-ACK: its option area on the wire with the handshake option, and whether that did not fit."""
        _, length, _ = self.handshake
        return syn_with_option(self.options(ts=True), length)


def _dss(ack: int | None = None, dsn: bool = False, csum: bool = False, ack64: bool = True, fin: bool = False):
    return MptcpOption.dss(data_ack=ack, data_seq=1 if dsn else None, subflow_seq=1, data_len=1,
                           csum=0 if csum else None, ack64=ack64, data_fin=fin)


_ACK64 = _dss(ack=1)  # the DSS of a pure ACK
_DATA = _dss(ack=1, dsn=True)  # the DSS of a data segment: 26 bytes + 2 NOPs
_DATA_CSUM = _dss(ack=1, dsn=True, csum=True)  # 28 bytes
_THMAC = bytes(MPTCPOPT_THMAC_LEN)
_HMAC = bytes(MPTCPOPT_HMAC_LEN)
_AHMAC = bytes(MPTCP_ADD_ADDR_HMAC_LEN)
_RM1 = MptcpOption.remove_addr([1])
_RM8 = MptcpOption.remove_addr(range(1, MPTCP_RM_IDS_MAX + 1))
_PRIO = MptcpOption.mp_prio(True)
_FAIL = MptcpOption.mp_fail(1)

CASES: tuple[Case, ...] = (
    # --- handshakes
    Case("SYN", (MptcpOption.mpc_syn(),), syn=True, note="MP_CAPABLE SYN",
         handshake=("HELLO", OPTLEN_HELLO, False)),
    Case("SYN", (MptcpOption.mpc_syn(),), syn=True, note="MP_CAPABLE SYN of a resumed connection",
         handshake=("NEXTK1-resume", OPTLEN_NEXTK1_RESUME, False)),
    Case("SYN-ACK", (MptcpOption.mpc_synack(_KEY),), syn=True, note="MP_CAPABLE SYN-ACK",
         handshake=("PKCONF", OPTLEN_PKCONF, False)),
    Case("SYN-ACK", (MptcpOption.mpc_synack(_KEY),), syn=True, note="MP_CAPABLE SYN-ACK of a resumed connection",
         handshake=("NEXTK2", OPTLEN_NEXTK2, False)),
    Case("third ACK", (MptcpOption.mpc_ack(_KEY, _KEY),), note="MP_CAPABLE ACK"),
    Case("first data", (MptcpOption.mpc_ack(_KEY, _KEY, 1),), note="MP_CAPABLE ACK + data (22 + 2 NOPs)"),
    Case("first data", (MptcpOption.mpc_ack(_KEY, _KEY, 1, 0),), note="MP_CAPABLE ACK + data + checksum"),
    Case("join SYN", (MptcpOption.mpj_syn(0, 0),), syn=True, note="MP_JOIN SYN",
         handshake=("NEXTK1", OPTLEN_NEXTK1_JOIN, True)),
    Case("join SYN-ACK", (MptcpOption.mpj_synack(_THMAC, 0),), syn=True, note="MP_JOIN SYN-ACK",
         handshake=("NEXTK2", OPTLEN_NEXTK2, True)),
    Case("join third ACK", (MptcpOption.mpj_ack(_HMAC),), note="MP_JOIN ACK"),
    # --- established: DSS
    Case("pure ACK", (_dss(ack=1, ack64=False),), note="DSS, 32-bit data ACK (until a 64-bit DSN is seen)"),
    Case("pure ACK", (_ACK64,), note="DSS, 64-bit data ACK"),
    Case("data", (_DATA,), note="DSS, 64-bit ACK + 64-bit map (26 + 2 NOPs): every Linux data segment"),
    Case("data", (_DATA_CSUM,), note="DSS, 64-bit ACK + 64-bit map + checksum"),
    Case("data", (_dss(ack=1, dsn=True, ack64=False),), note="DSS, 32-bit ACK + 64-bit map (22 + 2 NOPs)"),
    Case("data", (_dss(ack=1, dsn=True, ack64=False, csum=True),), note="DSS, 32-bit ACK + 64-bit map + csum"),
    Case("data", (_dss(dsn=True),), note="DSS, map only (no data ACK yet: server before accept())"),
    Case("data", (_dss(dsn=True, csum=True),), note="DSS, map only + checksum"),
    Case("DATA_FIN", (_dss(ack=1, dsn=True, fin=True),), note="DSS with F, map of length 1 (pure ACK or data)"),
    # --- established: address signalling (ADD_ADDR only on a pure ACK, replacing the DSS there)
    Case("pure ACK", (MptcpOption.add_addr(1, _V4, None, _AHMAC),), note="ADD_ADDR v4 + HMAC"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V4, _PORT, _AHMAC),), note="ADD_ADDR v4 + port + HMAC (18 + 2 NOPs)"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V6, None, _AHMAC),), note="ADD_ADDR v6 + HMAC"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V6, _PORT, _AHMAC),), note="ADD_ADDR v6 + port + HMAC (30 + 2 NOPs)"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V4),), note="ADD_ADDR echo v4"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V4, _PORT),), note="ADD_ADDR echo v4 + port"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V6),), note="ADD_ADDR echo v6"),
    Case("pure ACK", (MptcpOption.add_addr(1, _V6, _PORT),), note="ADD_ADDR echo v6 + port"),
    Case("pure ACK", (_ACK64, _RM1), movable=(1,), note="DSS + REMOVE_ADDR, 1 id"),
    Case("pure ACK", (_ACK64, _RM8), movable=(1,), note="DSS + REMOVE_ADDR, 8 ids (Linux's maximum)"),
    Case("pure ACK", (_ACK64, _PRIO), movable=(1,), note="DSS + MP_PRIO (3 + 1 NOP)"),
    Case("pure ACK", (_ACK64, _PRIO, _RM8), movable=(1, 2), note="DSS + MP_PRIO + REMOVE_ADDR, 8 ids"),
    Case("pure ACK", (_ACK64, _FAIL), movable=(1,), note="DSS + MP_FAIL"),
    # --- established: signalling that lands beside a data DSS (only when the room left allows)
    Case("data", (_DATA, _RM1), movable=(1,), note="DSS + REMOVE_ADDR, 1 id"),
    Case("data", (_DATA, _RM8), movable=(1,), note="DSS + REMOVE_ADDR, 8 ids"),
    Case("data", (_DATA, _PRIO), movable=(1,), note="DSS + MP_PRIO"),
    Case("data", (_DATA_CSUM, _FAIL), movable=(1,), note="DSS + checksum + MP_FAIL"),
    Case("first data", (MptcpOption.mpc_ack(_KEY, _KEY, 1, 0), _RM1), movable=(1,),
         note="MP_CAPABLE ACK + data + csum + REMOVE_ADDR, 1 id"),
    Case("first data", (MptcpOption.mpc_ack(_KEY, _KEY, 1, 0), _RM8), movable=(1,),
         note="MP_CAPABLE ACK + data + csum + REMOVE_ADDR, 8 ids"),
    Case("join third ACK", (MptcpOption.mpj_ack(_HMAC), _PRIO), movable=(1,), note="MP_JOIN ACK + MP_PRIO"),
    Case("join third ACK", (MptcpOption.mpj_ack(_HMAC), _PRIO, _RM8), movable=(1, 2),
         note="MP_JOIN ACK + MP_PRIO + REMOVE_ADDR, 8 ids"),
    # --- resets
    Case("RST", (MptcpOption.mp_tcprst(),), note="MP_TCPRST"),
    Case("RST", (MptcpOption.mp_fastclose(_KEY), MptcpOption.mp_tcprst()), note="MP_FASTCLOSE + MP_TCPRST"),
    Case("RST", (_FAIL, MptcpOption.mp_tcprst()), note="MP_FAIL + MP_TCPRST"),
)


def _handshake_cell(case: Case) -> str:
    name, length, restored = case.handshake
    area, overflow = case.handshake_area()
    if overflow:
        return f"{name} ({length}) does not fit"
    if has_timestamps(area):
        return f"{name} ({length}) beside TS: {len(area)}"
    back = "the peer's daemon restores it" if restored else "not restored"
    return f"TS gives way² to {name} ({length}): {len(area)}; {back}"


def _outcome_cell(o: Outcome) -> str:
    done = [{Step.TRIM_SACK: "trim SACK⁷", Step.DROP_TS: "drop TS⁴"}[s] for s in o.steps
            if s in (Step.TRIM_SACK, Step.DROP_TS)]
    if Step.DROP in o.steps:
        return ", ".join([*done, "drop + count⁶"])
    if Step.SPLIT in o.steps:
        return ", ".join([*done, f"split⁵: segment {len(o.sent[0])} + MAC; pure ACK {len(o.sent[1])} + MAC"])
    if done:
        return f"{', '.join(done)}: {len(o.sent[0])} + MAC"
    return "compact + MAC³" if o.compact else "MAC"


def _sack_cell(case: Case) -> str:
    n = linux_sack_blocks(case.used(ts=True))
    if not n:
        return "0"
    sent = case.outcome(sack=True).sent
    return f"{n} → {sack_blocks(sent[0])}" if sent else f"{n} → -"


def render_table() -> str:
    """The markdown budget table of docs/option-budget.md."""
    head = ("| # | segment | MPTCP options | Linux, TS+SACK: used | left | compact | MAC fits | SACK blocks⁷ "
            "| mptcrypt |")
    rows = [head, "|" + "---|" * 9]
    for i, case in enumerate(CASES, 1):
        used = case.used(ts=True)
        if case.syn:
            cells = [str(used), str(TCP_MAX_OPTION_SPACE - used), "-", "-", "-", _handshake_cell(case)]
        elif not case.sent_by_linux():
            cells = [str(used), "-", "-", "-", "-", "not sent¹; without TS: " + _outcome_cell(case.outcome(ts=False))]
        else:
            compact = len(compact_option_area(case.options(ts=True)))
            cells = [str(used), str(TCP_MAX_OPTION_SPACE - used), str(compact),
                     "yes" if fits_with_mac(compact) else "no", _sack_cell(case), _outcome_cell(case.outcome())]
        rows.append(f"| {i} | {case.segment} | {case.note} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


DOC_BEGIN = "<!-- option-budget-table: generated by `python -m mptcrypt.tools.option_budget`, do not edit by hand -->"
DOC_END = "<!-- end option-budget-table -->"


def doc_table(doc: str) -> str:
    """The table between the markers of docs/option-budget.md."""
    begin, end = doc.index(DOC_BEGIN) + len(DOC_BEGIN) + 1, doc.index(DOC_END)
    return doc[begin:end]


def with_table(doc: str) -> str:
    """``doc`` with the generated table between its markers."""
    begin, end = doc.index(DOC_BEGIN) + len(DOC_BEGIN) + 1, doc.index(DOC_END)
    return doc[:begin] + render_table() + doc[end:]


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mptcrypt.tools.option_budget",
                                     description="Print the TCP option budget table of docs/option-budget.md.")
    parser.add_argument("--update", metavar="DOC", help="rewrite the table inside DOC instead of printing it")
    args = parser.parse_args(argv)
    if args.update:
        with open(args.update, encoding="utf-8") as f:
            doc = f.read()
        with open(args.update, "w", encoding="utf-8") as f:
            f.write(with_table(doc))
    else:
        print(render_table(), end="")


if __name__ == "__main__":
    main()
