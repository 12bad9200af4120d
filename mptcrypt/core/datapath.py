"""Protected segments: seal what the local kernel sends, open what arrives, release what was held.

Every protected segment goes through the subflow's `SegmentCipher` (`crypto/segment.py`): this module only
extends seq/ack to 64 bits, keeps the sequence references and counters, and handles the two cases where the
kernel's options leave no room for the MAC option (trim SACK blocks; move an MPTCP signal to a pure ACK).

`FastPath` is the same job for ordinary segments done in C (crypto/_segment.c FlowTable): the engine installs a
protected subflow there after handling one of its segments, and the table seals / opens that subflow's data
segments and pure ACKs without Python (the daemon's batched queue calls it straight from C). What the table
declines (SYN/FIN/RST, options other than DSS, stale segments, MAC failures, a due REKEY) comes here as before.
"""

from __future__ import annotations

from mptcrypt.constants import MAC_OPTION_LEN, TCP_MAX_OPTION_SPACE, TCPOPT_TIMESTAMP
from mptcrypt.core import mptcp
from mptcrypt.core.events import DROP, Result, Verdict
from mptcrypt.core.session import Subflow
from mptcrypt.core.state import State
from mptcrypt.core.table import Table
from mptcrypt.crypto import segment
from mptcrypt.errors import DecodeError
from mptcrypt.wire import rewrite
from mptcrypt.wire.compact import compact_option_area
from mptcrypt.wire.mptcp import Subtype
from mptcrypt.wire.segment import Segment, parse_segment
from mptcrypt.wire.tcp import ACK, FIN, RST

# signals Linux may put beside a data DSS; moved to a pure ACK of their own when the MAC does not fit
SPLIT_SUBTYPES = (Subtype.REMOVE_ADDR, Subtype.MP_PRIO, Subtype.MP_FAIL)
# signals that change a connection's paths or end it: acted on only from segments not older than the newest
SIGNAL_SUBTYPES = (Subtype.ADD_ADDR, Subtype.REMOVE_ADDR, Subtype.MP_PRIO, Subtype.MP_FAIL, Subtype.MP_FASTCLOSE,
                   Subtype.MP_TCPRST)
# a REKEY put off until the peer shows it follows our current generation is looked at again after this many seconds
REKEY_RETRY = 1.0


def extended(seg: Segment, seq_ref: int, ack_ref: int) -> tuple[int, int]:
    """The segment's 64-bit extended seq and ack (0 without ACK): the numbers closest to the references whose low
    32 bits are the segment's. DecodeError for a number before the connection's ISN (it would be negative)."""
    ext_seq = seq_ref + ((seg.seq - seq_ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000
    ext_ack = ack_ref + ((seg.ack - ack_ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000 if seg.flags & ACK else 0
    if ext_seq < 0 or ext_ack < 0:
        raise DecodeError("sequence or acknowledgement number before the connection's ISN")
    return ext_seq, ext_ack


def protect(t: Table, sf: Subflow, seg: Segment, now: float) -> Result:
    flags = seg.flags
    ext_seq, ext_ack = extended(seg, sf.out_ref, sf.in_ref)
    if sf.bytes_out >= sf.tx_rekey_bytes or now >= sf.tx_rekey_time:
        _rekey(t, sf, now)
    packet = seg.packet
    out = sf.tx.seal(packet, seg.l4, ext_seq, ext_ack)
    if out is None:
        return _no_room(t, sf, seg, now, ext_seq, ext_ack)
    n = len(packet) - seg.data_off
    end = ext_seq + n
    if end > sf.out_ref:
        sf.out_ref = end
    if flags & (FIN | RST):
        t.note_close(sf, flags, True, now)
    conn = sf.conn
    if conn.mptcp and len(conn.keys) < 2 and not sf.join:
        # our own MP_CAPABLE key is only ever in what our kernel sends: the third ACK, the first data segment
        mptcp.learn_keys(t, sf, seg, outbound=True)
    sf.bytes_out += n
    sf.segments_out += 1
    c = t.counters
    c["segments_protected"] += 1
    c["bytes_encrypted"] += n
    return Result(Verdict.ACCEPT, out)


def unprotect(t: Table, sf: Subflow, seg: Segment, now: float) -> Result | None:
    """The kernel packet, DROP on a MAC failure, None when the segment carries no MAC option (the caller decides:
    a duplicate INIT, or an injection)."""
    flags = seg.flags
    ext_seq, ext_ack = extended(seg, sf.in_ref, sf.out_ref)
    out = sf.rx.open(seg.packet, seg.l4, ext_seq, ext_ack)
    c = t.counters
    if out is None:
        if not seg.has_mac():
            return None
        out = _open_other_generation(t, sf, seg, ext_seq, ext_ack)
        if out is None:
            t.count_rare("mac_failures", "mac-failure", sf.key, f"{c['mac_failures'] + 1} so far; segment dropped")
            return DROP
    n = len(seg.packet) - seg.data_off
    sf.unmacked = 0
    end = ext_seq + n
    if end < sf.in_ref or ext_ack < sf.in_ack_max:
        # older than what this subflow already verified: a retransmission, reordering, or a replay. MPTCP
        # signals on it are not acted on (issue 12 item 9: a verified pure ACK with MP_PRIO / REMOVE_ADDR /
        # ADD_ADDR replayed later would verify again; PAWS cannot be counted on: a segment with ADD_ADDR leaves
        # without timestamps, and join subflows start from a zero timestamp)
        if _carries_signal(seg):
            t.count_rare("stale_signals_dropped", "stale-signal", sf.key,
                         "MPTCP signal on a segment older than the subflow's newest; dropped")
            return DROP
    else:
        sf.in_ref = end
        sf.in_ack_max = ext_ack
    if not sf.confirmed:
        t.confirm(sf)
    if flags & (FIN | RST):
        t.note_close(sf, flags, False, now)
    conn = sf.conn
    if conn.mptcp and len(conn.keys) < 2 and not sf.join:
        mptcp.learn_keys(t, sf, parse_segment(out), outbound=False)
    sf.bytes_in += n
    sf.segments_in += 1
    c["segments_verified"] += 1
    c["bytes_decrypted"] += n
    return Result(Verdict.ACCEPT, out)


def _rekey(t: Table, sf: Subflow, now: float) -> None:
    """REKEY (docs/protocol.md §4): our direction moves to the next key generation after `rekey_bytes` or
    `rekey_interval`, but only once the peer has opened a segment of the current one: its verified ack covers the
    first sequence number we sent under it. The receiver looks one generation ahead; had the first segment of the
    current generation been lost, a second move would leave it two behind and every later segment would fail."""
    if sf.in_ack_max <= sf.tx_gen_start:
        if now >= sf.tx_rekey_time:  # look again soon (a pure-ACK direction would otherwise leave the fast path)
            sf.tx_rekey_time = now + min(t.config.rekey_interval, REKEY_RETRY)
        return
    sf.rekey_tx()
    # bytes from out_ref on (and a FIN already sent) were never sent under an older generation
    sf.tx_gen_start = sf.out_ref + sf.fin_out
    sf.tx_rekey_bytes = sf.bytes_out + t.config.rekey_bytes
    sf.tx_rekey_time = now + t.config.rekey_interval
    t.counters["rekeys_sent"] += 1


def _open_other_generation(t: Table, sf: Subflow, seg: Segment, ext_seq: int, ext_ack: int) -> bytes | None:
    """A segment that does not verify under the current generation: the peer's first under its next one (then
    we follow), or one still in flight under the previous one."""
    out = sf.next_rx().open(seg.packet, seg.l4, ext_seq, ext_ack)
    if out is not None:
        sf.follow_rx()
        t.counters["rekeys_followed"] += 1
        return out
    if sf.rx_prev is not None:
        return sf.rx_prev.open(seg.packet, seg.l4, ext_seq, ext_ack)
    return None


def _carries_signal(seg: Segment) -> bool:
    try:
        return any(o.subtype in SIGNAL_SUBTYPES for o in seg.mptcp())
    except DecodeError:
        return False


def _no_room(t: Table, sf: Subflow, seg: Segment, now: float, ext_seq: int, ext_ack: int) -> Result:
    """Kernel options leave no room for the MAC even in their compact form (docs/option-budget.md).

    SACK blocks are trimmed first (RFC 2018 §4: the peer keeps the older news). Then the timestamps option goes:
    beside a long MPTCP option (MP_CAPABLE or MP_JOIN on the third ACK, ADD_ADDR, a DSS with its checksum) the
    segment leaves without it (the receiving kernel takes a segment without timestamps, it only skips PAWS and
    the RTT sample for it). Last, Linux may put a pending REMOVE_ADDR, MP_PRIO or MP_FAIL beside a data
    segment's DSS. Linux forgets the signal once written, so dropping the segment would lose it: the signal
    moves to a pure ACK of our own at the segment's end (in window, so the peer kernel processes its options),
    both protected. Anything else is dropped and counted, never sent in plain."""
    compact = compact_option_area(seg.option_bytes())
    trimmed = rewrite.trim_sack(compact, TCP_MAX_OPTION_SPACE - MAC_OPTION_LEN)
    if trimmed is not None:
        t.counters["sack_trimmed"] += 1
        return protect(t, sf, parse_segment(rewrite.with_option_area(seg, trimmed)), now)
    untimed = rewrite.without_kind(compact, TCPOPT_TIMESTAMP)
    if untimed is not None:
        t.counters["timestamps_removed"] += 1
        return protect(t, sf, parse_segment(rewrite.with_option_area(seg, untimed)), now)
    split = rewrite.split_signals(seg, SPLIT_SUBTYPES)
    if split is None or MAC_OPTION_LEN + max(len(split[0]), len(split[1])) > TCP_MAX_OPTION_SPACE:
        t.counters["option_overflow"] += 1
        t.event("option-overflow", sf.key, f"{seg.option_len} option bytes leave no room for the MAC")
        return DROP
    rest, moved = split
    t.counters["signals_split"] += 1
    payload = seg.payload()
    first = protect(t, sf, parse_segment(rewrite.with_option_area(seg, rest)), now)
    signal = rewrite.shifted(seg, seg.seq + len(payload), ACK, moved, b"")
    second = protect(t, sf, parse_segment(signal), now)
    return Result(Verdict.ACCEPT, first.packet, inject=[second.packet])


def release(t: Table, sf: Subflow) -> list[bytes]:
    """Protect the segments held while keys did not exist yet, in the kernel's order."""
    out = []
    held, sf.hs.held = sf.hs.held, []
    for pkt in held:
        res = protect(t, sf, parse_segment(pkt), sf.last_seen)
        if res.packet is not None:
            out.append(res.packet)
    t.counters["released"] += len(out)
    return out


# the largest REKEY budget the table takes (its counts are 64-bit); a budget above it only never runs out here
MAX_TX_BUDGET = 1 << 62


class FastPath:
    """The engine's side of the compiled flow table (`segment.FlowTable`): which subflows are installed, and the
    copy of their state in both directions. The table is authoritative for an installed subflow's references,
    counts and last_seen between packets; `pull(sf)` brings them into the Subflow before Python reads or changes
    it, `sync(sf)` installs it again afterwards (or takes it out when it is no longer an ENCRYPTING flow with
    compiled ciphers). The engine calls pull / sync around every packet Python handles, its timers and
    everything that reports (stats, sessions, export); the table's drop hook takes out a forgotten subflow."""

    __slots__ = ("table", "packet", "installed", "_t")

    def __init__(self, t: Table):
        self.table = segment.FlowTable()
        self.packet = self.table.packet  # (packet, outbound, now) -> bytes, or None: the engine's turn
        self.installed: dict[tuple, Subflow] = {}
        self._t = t
        t.on_drop = self.forget

    def pull(self, sf: Subflow | None) -> None:
        if sf is not None and self.installed.get(sf.key) is sf:
            _take(sf, self.table.pull(sf.key))

    def sync(self, sf: Subflow | None) -> None:
        if sf is None:
            return
        key = sf.key
        if sf.state is State.ENCRYPTING and type(sf.tx) is self.table_cipher and type(sf.rx) is self.table_cipher \
                and self._t.flows.get(key) is sf:
            # inbound needs the flow confirmed (unprotect confirms it). MP_CAPABLE keys still to learn need no
            # test: learn_keys only acts on a segment with an MP_CAPABLE option, which the table declines
            self.table.install(key, sf.tx, sf.rx, sf.out_ref, sf.in_ref, sf.in_ack_max,
                               min(sf.tx_rekey_bytes - sf.bytes_out, MAX_TX_BUDGET), sf.tx_rekey_time, sf.confirmed,
                               sf.last_seen)
            self.installed[key] = sf
        elif self.installed.get(key) is sf:
            self.forget(sf)

    def forget(self, sf: Subflow) -> None:
        """Take `sf` out of the table, its counts pulled (Table.drop_flow calls this for every dropped flow)."""
        if self.installed.get(sf.key) is sf:
            del self.installed[sf.key]
            _take(sf, self.table.remove(sf.key))

    def pull_all(self) -> None:
        for sf in self.installed.values():
            _take(sf, self.table.pull(sf.key))
        self.pull_counters()

    def pull_counters(self) -> None:
        packets, protected, encrypted, verified, decrypted = self.table.take_counters()
        c = self._t.counters
        c["packets"] += packets
        c["segments_protected"] += protected
        c["bytes_encrypted"] += encrypted
        c["segments_verified"] += verified
        c["bytes_decrypted"] += decrypted

    table_cipher = segment.SegmentCipher  # the class the table takes: the compiled one


def _take(sf: Subflow, got) -> None:
    """What the table counted for `sf` since the last pull, into `sf` (as protect / unprotect would have)."""
    if got is None:
        return
    out_ref, in_ref, in_ack_max, last_seen, bytes_out, bytes_in, segments_out, segments_in, verified = got
    if not segments_out and not segments_in:
        return  # nothing handled in C since the last pull: the Subflow is newer (Python may have changed it since)
    sf.out_ref, sf.in_ref, sf.in_ack_max = out_ref, in_ref, in_ack_max
    if last_seen > sf.last_seen:
        sf.last_seen = last_seen
    sf.bytes_out += bytes_out
    sf.bytes_in += bytes_in
    sf.segments_out += segments_out
    sf.segments_in += segments_in
    if verified:
        sf.unmacked = 0
