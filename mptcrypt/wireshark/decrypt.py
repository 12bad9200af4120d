"""`mptcrypt decrypt`: a capture plus a key log in, a decrypted pcapng with a MAC verdict per packet out.

Wireshark 4.0's Lua API has no cipher or MAC functions (GcryptCipher arrived in later versions, and no version
offers keyed BLAKE2b), so the dissector cannot decrypt. This tool does it in Python with the very code the
daemons run: `SegmentCipher.open` of the logged direction secrets, with seq/ack extended to 64 bits from the
logged ISNs exactly as the engine does (`core.datapath`), so it follows the segment MAC and keystream of
whatever protocol version the daemon spoke.

Per packet of a logged subflow (SYNs and segments without a MAC option pass through unchanged, no verdict):
    MAC verifies  -> written as the receiving kernel saw it: MAC option removed, payload in plain text,
                     comment "mptcrypt: MAC ok"
    MAC fails     -> written as captured, comment "mptcrypt: bad MAC"
The dissector shows the comment as mptcrypt.verdict (with expert info for a bad MAC).
"""

from __future__ import annotations

import ipaddress

from mptcrypt.core.datapath import extended
from mptcrypt.crypto.segment import SegmentCipher
from mptcrypt.daemon.keylog import KeyLogEntry, read_keylog
from mptcrypt.errors import DecodeError
from mptcrypt.wire.segment import parse_segment
from mptcrypt.wire.tcp import ACK, SYN
from mptcrypt.wireshark.pcapng import Frame, read_frames, write_pcapng

ETH_HEADER_LEN = 14
ETHERTYPES_IP = (b"\x08\x00", b"\x86\xdd")
VERDICT_OK = "mptcrypt: MAC ok"
VERDICT_BAD = "mptcrypt: bad MAC"


class _Direction:
    __slots__ = ("cipher", "ref")

    def __init__(self, cipher: SegmentCipher, isn: int):
        self.cipher = cipher
        self.ref = isn + 1  # like Subflow.out_ref / in_ref: the highest sequence number seen, from ISN + 1


class Decryptor:
    """Opens the segments of the subflows in a key log, in capture order."""

    def __init__(self, entries: list[KeyLogEntry]):
        self._flows: dict[tuple, tuple[_Direction, _Direction]] = {}
        for e in entries:  # a later line for the same 4-tuple (the port reused) replaces the earlier one
            a = _Direction(SegmentCipher(e.suite, e.a), e.isn_a)
            b = _Direction(SegmentCipher(e.suite, e.b), e.isn_b)
            key = (ipaddress.ip_address(e.initiator[0]).packed, e.initiator[1],
                   ipaddress.ip_address(e.responder[0]).packed, e.responder[1])
            self._flows[key] = (a, b)

    def packet(self, packet: bytes) -> tuple[bytes, str | None]:
        """(packet to write, verdict comment or None) for one IP packet."""
        try:
            seg = parse_segment(packet)
        except DecodeError:
            return packet, None
        if seg is None or seg.flags & SYN:
            return packet, None
        pair = self._flows.get((seg.src, seg.sport, seg.dst, seg.dport))
        if pair is not None:
            this, other = pair
        else:
            pair = self._flows.get((seg.dst, seg.dport, seg.src, seg.sport))
            if pair is None:
                return packet, None
            other, this = pair
        if not seg.has_mac():
            return packet, None  # INIT1/INIT2, or a segment before the keys
        try:
            ext_seq, ext_ack = extended(seg, this.ref, other.ref)
        except DecodeError:
            return packet, VERDICT_BAD
        opened = this.cipher.open(seg.packet, seg.l4, ext_seq, ext_ack)
        if opened is None:
            return packet, VERDICT_BAD
        end = ext_seq + len(seg.packet) - seg.data_off
        if end > this.ref:
            this.ref = end
        return opened, VERDICT_OK


def decrypt_frames(frames, entries: list[KeyLogEntry]):
    dec = Decryptor(entries)
    for frame in frames:
        data = frame.data
        if len(data) <= ETH_HEADER_LEN or data[12:14] not in ETHERTYPES_IP:
            yield frame
            continue
        packet, verdict = dec.packet(data[ETH_HEADER_LEN:])
        yield Frame(frame.time, data[:ETH_HEADER_LEN] + packet, verdict) if verdict else frame


def decrypt_file(capture: str, keylog: str, out: str) -> dict[str, int]:
    """Write the decrypted capture to `out`; counts of mac_ok, bad_mac and other packets."""
    with open(capture, "rb") as fh:
        data = fh.read()
    counts = {"mac_ok": 0, "bad_mac": 0, "other": 0}

    def counted(frames):
        for f in frames:
            counts["mac_ok" if f.comment == VERDICT_OK else "bad_mac" if f.comment == VERDICT_BAD else "other"] += 1
            yield f

    with open(out, "wb") as fh:
        write_pcapng(fh, counted(decrypt_frames(read_frames(data), read_keylog(keylog))))
    return counts
