"""The 40-byte TCP option budget of every MPTCP option combination Linux emits, and the room left for the
12-byte mptcrypt MAC option. ``python -m mptcrypt.tools.option_budget`` prints the table that is in
docs/option-budget.md (a unit test keeps the two identical).

Every figure is the length of real option bytes: each case builds the TCP option block Linux writes for it
(``tcp_options_write`` + ``mptcp_write_options``: MSS, NOP+WS, SACK-permitted packed with the timestamp or
behind two NOPs, NOP NOP TS, and each MPTCP suboption padded with NOPs to a 32-bit word) using the codec of
:mod:`mptcrypt.wire.mptcp`, and measures it. The accounting mirrors Linux ``net/mptcp/options.c``
(``mptcp_established_options`` and friends): ADD_ADDR goes only on a pure ACK and replaces the DSS there;
REMOVE_ADDR, MP_PRIO and MP_FAIL ride beside a DSS when the room left after the timestamp allows; a
suboption that does not fit is not written and the kernel tries again on a later segment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from mptcrypt.constants import (
    EXP_HEADER_LEN,
    MAC_OPTION_LEN,
    TCP_MAX_OPTION_SPACE,
    TCPOPT_MSS,
    TCPOPT_NOP,
    TCPOPT_SACK,
    TCPOPT_SACK_PERM,
    TCPOPT_TIMESTAMP,
    TCPOPT_WSCALE,
)
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
from mptcrypt.wire.tcp import (
    TCPOLEN_MSS,
    TCPOLEN_SACK_BLOCK,
    TCPOLEN_SACK_PERM,
    TCPOLEN_TIMESTAMP,
    TCPOLEN_WSCALE,
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


OPTLEN_PKCONF_MAX = EXP_HEADER_LEN + 1 + MAX_PKCONF_CIPHERS  # header, type, up to MAX_PKCONF_CIPHERS ids


class Handling(Enum):
    """What the mptcrypt daemon does with a protected segment (timestamps and SACK off)."""

    HANDSHAKE = "no MAC on a SYN: the space left carries the handshake option"
    STRIP_TS = "remove timestamps and SACK-permitted from the SYN, then add the handshake option"
    MAC = "MAC added"
    SPLIT = "move the signalling suboption to a daemon-made pure ACK with its own MAC"
    DROP = "drop and count"


def handling_for(options_len: int, movable_len: int = 0) -> Handling:
    """Decide for an established protected segment whose kernel options take ``options_len`` bytes, of which
    ``movable_len`` are REMOVE_ADDR / MP_PRIO / MP_FAIL suboptions (padding included) that can travel on a
    separate pure ACK."""
    if fits_with_mac(options_len):
        return Handling.MAC
    if movable_len and fits_with_mac(options_len - movable_len):
        return Handling.SPLIT
    return Handling.DROP


@dataclass(frozen=True)
class Case:
    """One option combination Linux emits."""

    segment: str  # which segment carries it
    mptcp: tuple[MptcpOption, ...]  # MPTCP suboptions in Linux's write order
    syn: bool = False  # SYN / SYN-ACK: MSS, WS and SACK-permitted too
    movable: tuple[int, ...] = ()  # indexes into ``mptcp`` of suboptions the daemon may move to a pure ACK
    note: str = ""
    # SYN / SYN-ACK: (mptcrypt option it carries, its length, does the segment carry TS when a daemon adds it)
    handshake: tuple[str, int, bool] | None = None

    def mptcp_bytes(self) -> list[bytes]:
        return [padded(encode_mptcp(o)) for o in self.mptcp]

    def options(self, ts: bool) -> bytes:
        """The whole option block, as Linux writes it, with or without timestamps (and SACK-permitted)."""
        return plain_tcp_options(syn=self.syn, ts=ts, sack_perm=ts) + b"".join(self.mptcp_bytes())

    def used(self, ts: bool) -> int:
        return len(self.options(ts))

    def movable_len(self) -> int:
        return sum(len(b) for i, b in enumerate(self.mptcp_bytes()) if i in self.movable)

    def handling(self) -> Handling:
        if self.handshake:
            _, length, with_ts = self.handshake
            if align4(length) <= TCP_MAX_OPTION_SPACE - self.used(ts=with_ts):
                return Handling.HANDSHAKE
            if align4(length) <= TCP_MAX_OPTION_SPACE - self.used(ts=False):
                return Handling.STRIP_TS
            return Handling.DROP
        return handling_for(self.used(ts=False), self.movable_len())


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
         handshake=("HELLO", OPTLEN_HELLO, True)),
    Case("SYN", (MptcpOption.mpc_syn(),), syn=True, note="MP_CAPABLE SYN of a resumed connection",
         handshake=("NEXTK1-resume", OPTLEN_NEXTK1_RESUME, True)),
    Case("SYN-ACK", (MptcpOption.mpc_synack(_KEY),), syn=True, note="MP_CAPABLE SYN-ACK",
         handshake=("PKCONF", OPTLEN_PKCONF_MAX, False)),
    Case("SYN-ACK", (MptcpOption.mpc_synack(_KEY),), syn=True, note="MP_CAPABLE SYN-ACK of a resumed connection",
         handshake=("NEXTK2", OPTLEN_NEXTK2, False)),
    Case("third ACK", (MptcpOption.mpc_ack(_KEY, _KEY),), note="MP_CAPABLE ACK"),
    Case("first data", (MptcpOption.mpc_ack(_KEY, _KEY, 1),), note="MP_CAPABLE ACK + data (22 + 2 NOPs)"),
    Case("first data", (MptcpOption.mpc_ack(_KEY, _KEY, 1, 0),), note="MP_CAPABLE ACK + data + checksum"),
    Case("join SYN", (MptcpOption.mpj_syn(0, 0),), syn=True, note="MP_JOIN SYN",
         handshake=("NEXTK1", OPTLEN_NEXTK1_JOIN, True)),
    Case("join SYN-ACK", (MptcpOption.mpj_synack(_THMAC, 0),), syn=True, note="MP_JOIN SYN-ACK",
         handshake=("NEXTK2", OPTLEN_NEXTK2, False)),
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


def _cell_ts(case: Case) -> str:
    used = case.used(ts=True)
    if used > TCP_MAX_OPTION_SPACE:
        return f"{used} | - | not sent¹"
    left = TCP_MAX_OPTION_SPACE - used
    return f"{used} | {left} | " + ("-" if case.syn else "yes" if fits_with_mac(used) else "no")


def _action(case: Case) -> str:
    h = case.handling()
    used = case.used(ts=False)
    if case.handshake:
        name, length, with_ts = case.handshake
        if h is Handling.HANDSHAKE:
            where = "beside TS" if with_ts else "no TS"
            return f"{name} ({align4(length)}) in {TCP_MAX_OPTION_SPACE - case.used(ts=with_ts)} left, {where}²"
        if h is Handling.STRIP_TS:
            return f"strip TS + SACK-perm², then {name} ({align4(length)}) in {TCP_MAX_OPTION_SPACE - used} left"
        return "does not fit"
    if h is Handling.MAC:
        return "MAC"
    if h is Handling.SPLIT:
        rest, moved = used - case.movable_len(), case.movable_len()
        return f"split³: segment {rest} + MAC; pure ACK {moved} + MAC"
    return "drop + count⁴"


def render_table() -> str:
    """The markdown budget table of docs/option-budget.md."""
    head = ("| # | segment | MPTCP options | with TS+SACK: used | left | MAC fits | without TS/SACK: used | left "
            "| MAC fits | mptcrypt |")
    rows = [head, "|" + "---|" * 10]
    for i, case in enumerate(CASES, 1):
        used = case.used(ts=False)
        fits = "-" if case.syn else "yes" if fits_with_mac(used) else "no"
        rows.append(f"| {i} | {case.segment} | {case.note} | {_cell_ts(case)} | {used} | "
                    f"{TCP_MAX_OPTION_SPACE - used} | {fits} | {_action(case)} |")
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
