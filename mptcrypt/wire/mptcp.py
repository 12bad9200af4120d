"""MPTCP option codec (TCP option kind 30, RFC 8684 §3), every subtype, both directions.

Modelled on Linux ``net/mptcp/options.c``: ONE function, :func:`parse_mptcp`, reads an option into ONE
:class:`MptcpOption` (fields plus a bitmask ``present`` of :class:`Has` bits saying which fields the option
carried), and ONE function, :func:`encode_mptcp`, writes it back. Lengths are the ``TCPOLEN_MPTCP_*`` constants
of Linux ``net/mptcp/protocol.h``.

Wire layouts (byte 0 kind=30, byte 1 length, byte 2 = subtype << 4 | low nibble)::

    MP_CAPABLE   nibble=version, byte 3 flags A..H, [sender key 8] [receiver key 8] [data-level len 2] [csum 2]
                 SYN 4, SYN-ACK 12, third ACK 20, ACK + data 22, ACK + data + checksum 24
    MP_JOIN      SYN 12:     nibble=rsv|B, address id, receiver token 4, sender random (nonce) 4
                 SYN-ACK 16: nibble=rsv|B, address id, truncated HMAC 8 (leftmost 64 bits), nonce 4
                 ACK 24:     12 reserved bits, HMAC 20 (leftmost 160 bits)
    DSS          nibble rsv, byte 3 flags rsv(3)|F|m|M|a|A, [data ack 4|8] [DSN 4|8, subflow seq 4,
                 data-level len 2, [checksum 2]]
    ADD_ADDR     nibble=rsv|E, address id, IPv4 4 | IPv6 16, [port 2], [truncated HMAC 8 iff E=0]
    REMOVE_ADDR  nibble rsv, address ids (one or more)
    MP_PRIO      nibble=rsv|B, [address id] (length 3; 4 with the RFC 6824 address id)
    MP_FAIL      12 reserved bits, DSN 8
    MP_FASTCLOSE 12 reserved bits, receiver's key 8
    MP_TCPRST    nibble=U|V|W|T, reason

Reserved bits are kept (``rsv``, or inside ``flags``) so that every parsed option re-encodes to the same
bytes. Options of unknown subtype are kept byte for byte (``Has.RAW``); so are framed options of a known
subtype whose body does not parse, when :func:`parse_mptcp` is called with ``strict=False``
(``Has.RAW | Has.MALFORMED``); with ``strict=True`` (the default) those raise :class:`DecodeError`.

This module is on the daemon's per-packet path: no logging, precompiled :class:`struct.Struct` objects,
plain ints for the presence bits.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from mptcrypt.constants import MPTCP_TOKEN_LEN, TCPOPT_MPTCP
from mptcrypt.errors import DecodeError

__all__ = [
    "Subtype",
    "Has",
    "RstReason",
    "MptcpOption",
    "parse_mptcp",
    "encode_mptcp",
    "mptcp_token",
    "mptcp_idsn",
    "join_hmac",
    "add_addr_hmac",
]


class Subtype(IntEnum):
    """MPTCP option subtypes (IANA "MPTCP Option Subtypes"; Linux ``MPTCPOPT_*``)."""

    MP_CAPABLE = 0x0
    MP_JOIN = 0x1
    DSS = 0x2
    ADD_ADDR = 0x3
    REMOVE_ADDR = 0x4
    MP_PRIO = 0x5
    MP_FAIL = 0x6
    MP_FASTCLOSE = 0x7
    MP_TCPRST = 0x8
    MP_EXPERIMENTAL = 0xF


class RstReason(IntEnum):
    """MP_TCPRST reason codes (RFC 8684 §3.6)."""

    UNSPECIFIED = 0x00
    MPTCP_ERROR = 0x01
    LACK_OF_RESOURCES = 0x02
    ADMIN_PROHIBITED = 0x03
    TOO_MUCH_OUTSTANDING = 0x04
    UNACCEPTABLE_PERFORMANCE = 0x05
    MIDDLEBOX_INTERFERENCE = 0x06


class Has(IntFlag):
    """What an option carried. ``MptcpOption.present`` is a plain int of these bits."""

    SNDR_KEY = 1 << 0  # MP_CAPABLE SYN-ACK / ACK: sender's key
    RCVR_KEY = 1 << 1  # MP_CAPABLE ACK: receiver's key; MP_FASTCLOSE: the receiver's key
    DATA_LEN = 1 << 2  # MP_CAPABLE ACK + data: data-level length
    CSUM = 1 << 3  # MP_CAPABLE ACK + data, DSS mapping: the 2-byte DSS checksum
    ADDR_ID = 1 << 4  # MP_JOIN SYN/SYN-ACK, ADD_ADDR, MP_PRIO (RFC 6824 form)
    TOKEN = 1 << 5  # MP_JOIN SYN: receiver's token
    NONCE = 1 << 6  # MP_JOIN SYN/SYN-ACK: sender's random number
    THMAC = 1 << 7  # MP_JOIN SYN-ACK: truncated HMAC (8 bytes)
    HMAC = 1 << 8  # MP_JOIN ACK: HMAC (20 bytes)
    DATA_ACK = 1 << 9  # DSS: data ACK (flag A)
    DATA_ACK64 = 1 << 10  # DSS: ... which is 8 bytes (flag a)
    MAP = 1 << 11  # DSS: DSN, subflow sequence number, data-level length (flag M)
    DSN64 = 1 << 12  # DSS: ... with an 8-byte DSN (flag m)
    ADDR = 1 << 13  # ADD_ADDR: address (4 or 16 bytes)
    PORT = 1 << 14  # ADD_ADDR: port
    AHMAC = 1 << 15  # ADD_ADDR: truncated HMAC (present iff not an echo)
    RM_IDS = 1 << 16  # REMOVE_ADDR: list of address ids
    FAIL_SEQ = 1 << 17  # MP_FAIL: DSN
    REASON = 1 << 18  # MP_TCPRST: flags U V W T and reason
    RAW = 1 << 19  # body kept byte for byte in ``raw`` (unknown subtype, or MALFORMED)
    MALFORMED = 1 << 20  # a known subtype whose body did not parse (only with strict=False)


# --- named lengths (Linux net/mptcp/protocol.h) --------------------------------------------------
TCPOLEN_MPTCP_MIN = 3  # kind, length, subtype byte
TCPOLEN_MPTCP_MPC_SYN = 4
TCPOLEN_MPTCP_MPC_SYNACK = 12
TCPOLEN_MPTCP_MPC_ACK = 20
TCPOLEN_MPTCP_MPC_ACK_DATA = 22
TCPOLEN_MPTCP_DSS_CHECKSUM = 2
TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM = TCPOLEN_MPTCP_MPC_ACK_DATA + TCPOLEN_MPTCP_DSS_CHECKSUM  # 24
TCPOLEN_MPTCP_MPJ_SYN = 12
TCPOLEN_MPTCP_MPJ_SYNACK = 16
TCPOLEN_MPTCP_MPJ_ACK = 24
TCPOLEN_MPTCP_DSS_BASE = 4
TCPOLEN_MPTCP_DSS_ACK32 = 4
TCPOLEN_MPTCP_DSS_ACK64 = 8
TCPOLEN_MPTCP_DSS_MAP32 = 10  # DSN 4 + subflow seq 4 + data-level length 2
TCPOLEN_MPTCP_DSS_MAP64 = 14  # DSN 8 + subflow seq 4 + data-level length 2
TCPOLEN_MPTCP_ADD_ADDR = 16  # IPv4 + HMAC
TCPOLEN_MPTCP_ADD_ADDR_PORT = 18
TCPOLEN_MPTCP_ADD_ADDR_BASE = 8  # IPv4, echo (no HMAC)
TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT = 10
TCPOLEN_MPTCP_ADD_ADDR6 = 28
TCPOLEN_MPTCP_ADD_ADDR6_PORT = 30
TCPOLEN_MPTCP_ADD_ADDR6_BASE = 20
TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT = 22
TCPOLEN_MPTCP_PORT_LEN = 2
TCPOLEN_MPTCP_PORT_ALIGN = 2  # Linux pads an ADD_ADDR with a port with two NOPs
TCPOLEN_MPTCP_RM_ADDR_BASE = 3
TCPOLEN_MPTCP_PRIO = 3
TCPOLEN_MPTCP_PRIO_ID = 4  # RFC 6824 MP_PRIO with the address id (Linux never sends it)
TCPOLEN_MPTCP_PRIO_ALIGN = 4  # Linux pads MP_PRIO with one NOP
TCPOLEN_MPTCP_FASTCLOSE = 12
TCPOLEN_MPTCP_RST = 4
TCPOLEN_MPTCP_FAIL = 12

MPTCP_KEY_LEN = 8
MPTCP_NONCE_LEN = 4
MPTCPOPT_THMAC_LEN = 8  # MP_JOIN SYN-ACK truncated HMAC
MPTCPOPT_HMAC_LEN = 20  # MP_JOIN ACK HMAC
MPTCP_ADD_ADDR_HMAC_LEN = 8  # ADD_ADDR truncated HMAC
MPTCP_IPV4_LEN = 4
MPTCP_IPV6_LEN = 16
MPTCP_RM_IDS_MAX = 8  # Linux sends at most 8 ids in one REMOVE_ADDR

# --- flag bits ---------------------------------------------------------------------------------------
MPTCP_VERSION_MASK = 0x0F
MPTCP_SUPPORTED_VERSION = 1
MPTCP_CAP_CHECKSUM_REQD = 0x80  # A
MPTCP_CAP_EXTENSIBILITY = 0x40  # B
MPTCP_CAP_DENY_JOIN_ID0 = 0x20  # C
MPTCP_CAP_HMAC_SHA256 = 0x01  # H
MPTCPOPT_BACKUP = 0x01  # MP_JOIN B
MPTCP_DSS_DATA_FIN = 0x10  # F
MPTCP_DSS_DSN64 = 0x08  # m
MPTCP_DSS_HAS_MAP = 0x04  # M
MPTCP_DSS_ACK64 = 0x02  # a
MPTCP_DSS_HAS_ACK = 0x01  # A
MPTCP_ADDR_ECHO = 0x01  # ADD_ADDR E
MPTCP_PRIO_BKUP = 0x01  # MP_PRIO B
MPTCP_RST_U = 0x08
MPTCP_RST_V = 0x04
MPTCP_RST_W = 0x02
MPTCP_RST_TRANSIENT = 0x01  # T

# plain-int copies of the presence bits for the hot path (IntFlag arithmetic is slow)
_SNDR_KEY = int(Has.SNDR_KEY)
_RCVR_KEY = int(Has.RCVR_KEY)
_DATA_LEN = int(Has.DATA_LEN)
_CSUM = int(Has.CSUM)
_ADDR_ID = int(Has.ADDR_ID)
_TOKEN = int(Has.TOKEN)
_NONCE = int(Has.NONCE)
_THMAC = int(Has.THMAC)
_HMAC = int(Has.HMAC)
_DATA_ACK = int(Has.DATA_ACK)
_DATA_ACK64 = int(Has.DATA_ACK64)
_MAP = int(Has.MAP)
_DSN64 = int(Has.DSN64)
_ADDR = int(Has.ADDR)
_PORT = int(Has.PORT)
_AHMAC = int(Has.AHMAC)
_RM_IDS = int(Has.RM_IDS)
_FAIL_SEQ = int(Has.FAIL_SEQ)
_REASON = int(Has.REASON)
_RAW = int(Has.RAW)
_MALFORMED = int(Has.MALFORMED)

_MPC_LAYOUT = {  # MP_CAPABLE length -> fields present
    TCPOLEN_MPTCP_MPC_SYN: 0,
    TCPOLEN_MPTCP_MPC_SYNACK: _SNDR_KEY,
    TCPOLEN_MPTCP_MPC_ACK: _SNDR_KEY | _RCVR_KEY,
    TCPOLEN_MPTCP_MPC_ACK_DATA: _SNDR_KEY | _RCVR_KEY | _DATA_LEN,
    TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM: _SNDR_KEY | _RCVR_KEY | _DATA_LEN | _CSUM,
}
_MPC_LEN = {v: k for k, v in _MPC_LAYOUT.items()}
_MPC_FIELDS = _SNDR_KEY | _RCVR_KEY | _DATA_LEN | _CSUM

_DSS_FIELDS = _DATA_ACK | _DATA_ACK64 | _MAP | _DSN64 | _CSUM
_DSS_LAYOUT_FLAGS = MPTCP_DSS_HAS_ACK | MPTCP_DSS_ACK64 | MPTCP_DSS_HAS_MAP | MPTCP_DSS_DSN64

# ADD_ADDR: (address length, port?, hmac?) <-> option length
_ADD_ADDR_LEN = {
    (MPTCP_IPV4_LEN, False, True): TCPOLEN_MPTCP_ADD_ADDR,
    (MPTCP_IPV4_LEN, True, True): TCPOLEN_MPTCP_ADD_ADDR_PORT,
    (MPTCP_IPV4_LEN, False, False): TCPOLEN_MPTCP_ADD_ADDR_BASE,
    (MPTCP_IPV4_LEN, True, False): TCPOLEN_MPTCP_ADD_ADDR_BASE_PORT,
    (MPTCP_IPV6_LEN, False, True): TCPOLEN_MPTCP_ADD_ADDR6,
    (MPTCP_IPV6_LEN, True, True): TCPOLEN_MPTCP_ADD_ADDR6_PORT,
    (MPTCP_IPV6_LEN, False, False): TCPOLEN_MPTCP_ADD_ADDR6_BASE,
    (MPTCP_IPV6_LEN, True, False): TCPOLEN_MPTCP_ADD_ADDR6_BASE_PORT,
}
# (option length, echo?) -> (address length, port?)
_ADD_ADDR_LAYOUT = {(n, not h): (a, p) for (a, p, h), n in _ADD_ADDR_LEN.items()}

# --- precompiled structs -------------------------------------------------------------------------------
_HDR = struct.Struct("!BBB")  # kind, length, subtype|nibble
_HDR4 = struct.Struct("!BBBB")  # kind, length, subtype|nibble, 4th byte
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_MPJ_SYN = struct.Struct("!BII")  # address id, token, nonce (from offset 3)
_MPJ_SYNACK = struct.Struct("!B8sI")  # address id, thmac, nonce (from offset 3)
_DSS_MAP32 = struct.Struct("!IIH")  # DSN, subflow seq, data-level length
_DSS_MAP64 = struct.Struct("!QIH")
_Q_AT4 = struct.Struct("!Q")  # MP_FAIL / MP_FASTCLOSE 8-byte value at offset 4


@dataclass(slots=True)
class MptcpOption:
    """One MPTCP option. Which fields mean something is said by ``present`` (bits of :class:`Has`).

    subtype      :class:`Subtype` value (any 0..15; unknown ones are kept as ``raw``)
    present      bitmask of :class:`Has` bits: the fields this option carries
    version      MP_CAPABLE version (low nibble of byte 2)
    flags        the subtype's flag field as on the wire: MP_CAPABLE byte 3 (A..H, ``MPTCP_CAP_*``); DSS byte 3
                 (rsv|F|m|M|a|A, ``MPTCP_DSS_*``); MP_JOIN, ADD_ADDR, MP_PRIO, MP_TCPRST and raw options: the
                 low nibble of byte 2 (B; E; B; U V W T; whatever it holds)
    rsv          other reserved bits, kept for exact re-encoding: DSS and REMOVE_ADDR the nibble of byte 2;
                 MP_JOIN ACK, MP_FAIL, MP_FASTCLOSE the 12 bits after the subtype (nibble << 8 | byte 3)
    sndr_key     MP_CAPABLE sender's key (8 bytes)
    rcvr_key     MP_CAPABLE receiver's key; MP_FASTCLOSE "Option Receiver's Key" (8 bytes)
    data_len     data-level length (MP_CAPABLE ACK + data, DSS mapping)
    csum         DSS checksum (MP_CAPABLE ACK + data, DSS mapping), as a 16-bit int
    addr_id      address id (MP_JOIN SYN/SYN-ACK, ADD_ADDR, MP_PRIO with id)
    token        MP_JOIN SYN: the receiver's token
    nonce        MP_JOIN SYN/SYN-ACK: the sender's random number (32-bit int)
    thmac        MP_JOIN SYN-ACK truncated HMAC (8 bytes)
    hmac         MP_JOIN ACK HMAC (20 bytes)
    data_ack     DSS data ACK (32 or 64 bits, as on the wire)
    data_seq     DSS data sequence number (32 or 64 bits, as on the wire)
    subflow_seq  DSS relative subflow sequence number
    addr         ADD_ADDR address, network order (4 or 16 bytes)
    port         ADD_ADDR port
    ahmac        ADD_ADDR truncated HMAC (8 bytes)
    rm_ids       REMOVE_ADDR address ids
    fail_seq     MP_FAIL data sequence number
    reason       MP_TCPRST reason
    raw          unknown subtype / malformed body: every byte after byte 2
    """

    subtype: int
    present: int = 0
    version: int = 0
    flags: int = 0
    rsv: int = 0
    sndr_key: bytes = b""
    rcvr_key: bytes = b""
    data_len: int = 0
    csum: int = 0
    addr_id: int = 0
    token: int = 0
    nonce: int = 0
    thmac: bytes = b""
    hmac: bytes = b""
    data_ack: int = 0
    data_seq: int = 0
    subflow_seq: int = 0
    addr: bytes = b""
    port: int = 0
    ahmac: bytes = b""
    rm_ids: tuple[int, ...] = ()
    fail_seq: int = 0
    reason: int = 0
    raw: bytes = b""

    # --- convenience views (not used on the hot path) ---
    def has(self, bits: int) -> bool:
        """True when every bit of ``bits`` (e.g. ``Has.MAP | Has.DSN64``) is present."""
        return self.present & bits == bits

    @property
    def data_fin(self) -> bool:
        return self.subtype == Subtype.DSS and bool(self.flags & MPTCP_DSS_DATA_FIN)

    @property
    def backup(self) -> bool:
        return self.subtype in (Subtype.MP_JOIN, Subtype.MP_PRIO) and bool(self.flags & MPTCPOPT_BACKUP)

    @property
    def echo(self) -> bool:
        return self.subtype == Subtype.ADD_ADDR and bool(self.flags & MPTCP_ADDR_ECHO)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return ipaddress.ip_address(self.addr) if self.present & _ADDR else None

    # --- constructors for options this project writes or forges ---
    @classmethod
    def mpc_syn(cls, flags: int = MPTCP_CAP_HMAC_SHA256, version: int = MPTCP_SUPPORTED_VERSION) -> MptcpOption:
        return cls(Subtype.MP_CAPABLE, 0, version, flags)

    @classmethod
    def mpc_synack(cls, sndr_key: bytes, flags: int = MPTCP_CAP_HMAC_SHA256) -> MptcpOption:
        return cls(Subtype.MP_CAPABLE, _SNDR_KEY, MPTCP_SUPPORTED_VERSION, flags, sndr_key=sndr_key)

    @classmethod
    def mpc_ack(cls, sndr_key: bytes, rcvr_key: bytes, data_len: int | None = None, csum: int | None = None,
                flags: int = MPTCP_CAP_HMAC_SHA256) -> MptcpOption:
        present = _SNDR_KEY | _RCVR_KEY
        if data_len is not None:
            present |= _DATA_LEN
            if csum is not None:
                present |= _CSUM
        return cls(Subtype.MP_CAPABLE, present, MPTCP_SUPPORTED_VERSION, flags, sndr_key=sndr_key,
                   rcvr_key=rcvr_key, data_len=data_len or 0, csum=csum or 0)

    @classmethod
    def mpj_syn(cls, token: int, nonce: int, addr_id: int = 0, backup: bool = False) -> MptcpOption:
        return cls(Subtype.MP_JOIN, _ADDR_ID | _TOKEN | _NONCE, flags=MPTCPOPT_BACKUP if backup else 0,
                   addr_id=addr_id, token=token, nonce=nonce)

    @classmethod
    def mpj_synack(cls, thmac: bytes, nonce: int, addr_id: int = 0, backup: bool = False) -> MptcpOption:
        return cls(Subtype.MP_JOIN, _ADDR_ID | _THMAC | _NONCE, flags=MPTCPOPT_BACKUP if backup else 0,
                   addr_id=addr_id, thmac=thmac, nonce=nonce)

    @classmethod
    def mpj_ack(cls, hmac: bytes) -> MptcpOption:
        return cls(Subtype.MP_JOIN, _HMAC, hmac=hmac)

    @classmethod
    def dss(cls, data_ack: int | None = None, data_seq: int | None = None, subflow_seq: int = 0,
            data_len: int = 0, csum: int | None = None, data_fin: bool = False, ack64: bool = True,
            dsn64: bool = True) -> MptcpOption:
        present = 0
        flags = MPTCP_DSS_DATA_FIN if data_fin else 0
        if data_ack is not None:
            present |= _DATA_ACK
            flags |= MPTCP_DSS_HAS_ACK
            if ack64:
                present |= _DATA_ACK64
                flags |= MPTCP_DSS_ACK64
        if data_seq is not None:
            present |= _MAP
            flags |= MPTCP_DSS_HAS_MAP
            if dsn64:
                present |= _DSN64
                flags |= MPTCP_DSS_DSN64
            if csum is not None:
                present |= _CSUM
        mapped = data_seq is not None
        return cls(Subtype.DSS, present, flags=flags, data_ack=data_ack or 0, data_seq=data_seq or 0,
                   subflow_seq=subflow_seq if mapped else 0, data_len=data_len if mapped else 0,
                   csum=(csum or 0) if mapped else 0)

    @classmethod
    def add_addr(cls, addr_id: int, addr, port: int | None = None, ahmac: bytes | None = None) -> MptcpOption:
        """An ADD_ADDR; without ``ahmac`` it is an echo (E=1)."""
        present = _ADDR_ID | _ADDR
        if port is not None:
            present |= _PORT
        if ahmac is not None:
            present |= _AHMAC
        return cls(Subtype.ADD_ADDR, present, flags=0 if ahmac is not None else MPTCP_ADDR_ECHO,
                   addr_id=addr_id, addr=_addr_bytes(addr), port=port or 0, ahmac=ahmac or b"")

    @classmethod
    def remove_addr(cls, ids) -> MptcpOption:
        return cls(Subtype.REMOVE_ADDR, _RM_IDS, rm_ids=tuple(ids))

    @classmethod
    def mp_prio(cls, backup: bool, addr_id: int | None = None) -> MptcpOption:
        return cls(Subtype.MP_PRIO, 0 if addr_id is None else _ADDR_ID, flags=MPTCP_PRIO_BKUP if backup else 0,
                   addr_id=addr_id or 0)

    @classmethod
    def mp_fail(cls, fail_seq: int) -> MptcpOption:
        return cls(Subtype.MP_FAIL, _FAIL_SEQ, fail_seq=fail_seq)

    @classmethod
    def mp_fastclose(cls, rcvr_key: bytes) -> MptcpOption:
        return cls(Subtype.MP_FASTCLOSE, _RCVR_KEY, rcvr_key=rcvr_key)

    @classmethod
    def mp_tcprst(cls, reason: int = RstReason.UNSPECIFIED, flags: int = 0) -> MptcpOption:
        return cls(Subtype.MP_TCPRST, _REASON, flags=flags, reason=reason)


# ============================================================================ parse


def _bad(subtype: int, n: int, why: str) -> DecodeError:
    try:
        name = Subtype(subtype).name
    except ValueError:
        name = f"subtype {subtype}"
    return DecodeError(f"MPTCP {name} option of length {n}: {why}")


def _parse_mp_capable(opt: bytes, n: int, b2: int) -> MptcpOption:
    present = _MPC_LAYOUT.get(n)
    if present is None:
        raise _bad(0, n, "an MP_CAPABLE option is 4 (SYN), 12 (SYN-ACK), 20 (ACK), 22 or 24 (ACK + data) bytes")
    o = MptcpOption(0, present, b2 & MPTCP_VERSION_MASK, opt[3])
    if n >= TCPOLEN_MPTCP_MPC_SYNACK:
        o.sndr_key = opt[4:12]
        if n >= TCPOLEN_MPTCP_MPC_ACK:
            o.rcvr_key = opt[12:20]
            if n >= TCPOLEN_MPTCP_MPC_ACK_DATA:
                o.data_len = _U16.unpack_from(opt, 20)[0]
                if n == TCPOLEN_MPTCP_MPC_ACK_DATA_CSUM:
                    o.csum = _U16.unpack_from(opt, 22)[0]
    return o


def _parse_mp_join(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n == TCPOLEN_MPTCP_MPJ_SYN:
        addr_id, token, nonce = _MPJ_SYN.unpack_from(opt, 3)
        return MptcpOption(1, _ADDR_ID | _TOKEN | _NONCE, 0, b2 & 0xF, 0, b"", b"", 0, 0, addr_id, token, nonce)
    if n == TCPOLEN_MPTCP_MPJ_SYNACK:
        addr_id, thmac, nonce = _MPJ_SYNACK.unpack_from(opt, 3)
        return MptcpOption(1, _ADDR_ID | _THMAC | _NONCE, 0, b2 & 0xF, 0, b"", b"", 0, 0, addr_id, 0, nonce, thmac)
    if n == TCPOLEN_MPTCP_MPJ_ACK:
        return MptcpOption(1, _HMAC, 0, 0, (b2 & 0xF) << 8 | opt[3], hmac=opt[4:24])
    raise _bad(1, n, "an MP_JOIN option is 12 (SYN), 16 (SYN-ACK) or 24 (ACK) bytes")


def _dss_entry(layout: int) -> tuple[int, int, struct.Struct, struct.Struct]:
    """(present, length without checksum, field struct, field struct + checksum) for DSS flags A a M m."""
    present, fmt, n = 0, "!", TCPOLEN_MPTCP_DSS_BASE
    if layout & MPTCP_DSS_HAS_ACK:
        if layout & MPTCP_DSS_ACK64:
            present, fmt, n = _DATA_ACK | _DATA_ACK64, fmt + "Q", n + TCPOLEN_MPTCP_DSS_ACK64
        else:
            present, fmt, n = _DATA_ACK, fmt + "I", n + TCPOLEN_MPTCP_DSS_ACK32
    if layout & MPTCP_DSS_HAS_MAP:
        if layout & MPTCP_DSS_DSN64:
            present, fmt, n = present | _MAP | _DSN64, fmt + "QIH", n + TCPOLEN_MPTCP_DSS_MAP64
        else:
            present, fmt, n = present | _MAP, fmt + "IIH", n + TCPOLEN_MPTCP_DSS_MAP32
    return present, n, struct.Struct(fmt), struct.Struct(fmt + "H")


_DSS_TABLE = tuple(_dss_entry(layout) for layout in range(16))  # indexed by flags & 0x0F


def _parse_dss(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n < TCPOLEN_MPTCP_DSS_BASE:
        raise _bad(2, n, "a DSS option has at least 4 bytes")
    flags = opt[3]
    present, expected, plain, with_csum = _DSS_TABLE[flags & 0x0F]
    if n == expected:
        v = plain.unpack_from(opt, 4)
        csum = 0
    elif n == expected + TCPOLEN_MPTCP_DSS_CHECKSUM and present & _MAP:
        v = with_csum.unpack_from(opt, 4)
        csum = v[-1]
        present |= _CSUM
    elif present & _MAP:
        raise _bad(2, n, f"flags 0x{flags:02x} need {expected} bytes, or {expected + 2} with a checksum")
    else:
        raise _bad(2, n, f"flags 0x{flags:02x} need {expected} bytes")
    if present & _MAP:
        if present & _DATA_ACK:  # the usual data segment
            return MptcpOption(2, present, 0, flags, b2 & 0xF, b"", b"", v[3], csum, 0, 0, 0, b"", b"",
                               v[0], v[1], v[2])
        return MptcpOption(2, present, 0, flags, b2 & 0xF, b"", b"", v[2], csum, 0, 0, 0, b"", b"",
                           0, v[0], v[1])
    if present:  # pure data ACK
        return MptcpOption(2, present, 0, flags, b2 & 0xF, b"", b"", 0, 0, 0, 0, 0, b"", b"", v[0])
    return MptcpOption(2, 0, 0, flags, b2 & 0xF)


def _parse_add_addr(opt: bytes, n: int, b2: int) -> MptcpOption:
    echo = bool(b2 & MPTCP_ADDR_ECHO)
    layout = _ADD_ADDR_LAYOUT.get((n, echo))
    if layout is None:
        if echo:
            raise _bad(3, n, "an ADD_ADDR echo (E=1) is 8/10 (IPv4, +port) or 20/22 (IPv6, +port) bytes")
        raise _bad(3, n, "an ADD_ADDR with HMAC (E=0) is 16/18 (IPv4, +port) or 28/30 (IPv6, +port) bytes")
    alen, has_port = layout
    end = 4 + alen
    present = _ADDR_ID | _ADDR
    o = MptcpOption(3, present, 0, b2 & 0xF, addr_id=opt[3], addr=opt[4:end])
    if has_port:
        o.port = _U16.unpack_from(opt, end)[0]
        end += TCPOLEN_MPTCP_PORT_LEN
        present |= _PORT
    if not echo:
        o.ahmac = opt[end:end + MPTCP_ADD_ADDR_HMAC_LEN]
        present |= _AHMAC
    o.present = present
    return o


def _parse_remove_addr(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n <= TCPOLEN_MPTCP_RM_ADDR_BASE:
        raise _bad(4, n, "a REMOVE_ADDR option lists at least one address id (length >= 4)")
    return MptcpOption(4, _RM_IDS, 0, 0, b2 & 0xF, rm_ids=tuple(opt[3:]))


def _parse_mp_prio(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n == TCPOLEN_MPTCP_PRIO:
        return MptcpOption(5, 0, 0, b2 & 0xF)
    if n == TCPOLEN_MPTCP_PRIO_ID:
        return MptcpOption(5, _ADDR_ID, 0, b2 & 0xF, addr_id=opt[3])
    raise _bad(5, n, "an MP_PRIO option is 3 bytes (4 with an address id)")


def _parse_mp_fail(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n != TCPOLEN_MPTCP_FAIL:
        raise _bad(6, n, "an MP_FAIL option is 12 bytes")
    return MptcpOption(6, _FAIL_SEQ, 0, 0, (b2 & 0xF) << 8 | opt[3], fail_seq=_Q_AT4.unpack_from(opt, 4)[0])


def _parse_mp_fastclose(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n != TCPOLEN_MPTCP_FASTCLOSE:
        raise _bad(7, n, "an MP_FASTCLOSE option is 12 bytes")
    return MptcpOption(7, _RCVR_KEY, 0, 0, (b2 & 0xF) << 8 | opt[3], rcvr_key=opt[4:12])


def _parse_mp_tcprst(opt: bytes, n: int, b2: int) -> MptcpOption:
    if n != TCPOLEN_MPTCP_RST:
        raise _bad(8, n, "an MP_TCPRST option is 4 bytes")
    return MptcpOption(8, _REASON, 0, b2 & 0xF, reason=opt[3])


_PARSERS = (
    _parse_mp_capable,
    _parse_mp_join,
    _parse_dss,
    _parse_add_addr,
    _parse_remove_addr,
    _parse_mp_prio,
    _parse_mp_fail,
    _parse_mp_fastclose,
    _parse_mp_tcprst,
)
_N_KNOWN = len(_PARSERS)


def parse_mptcp(opt: bytes, strict: bool = True) -> MptcpOption:
    """Parse one whole MPTCP option (kind, length, body) into an :class:`MptcpOption`.

    Raises :class:`DecodeError` when the bytes are not a framed MPTCP option (kind is not 30, the length byte
    disagrees with ``len(opt)``, no subtype byte) and, with ``strict`` (the default), when a known subtype's
    body does not parse. With ``strict=False`` such a framed option is returned as ``Has.RAW | Has.MALFORMED``
    and re-encodes to the same bytes. Unknown subtypes always come back as ``Has.RAW``.
    """
    if type(opt) is not bytes:
        opt = bytes(opt)
    n = len(opt)
    if n < TCPOLEN_MPTCP_MIN or opt[0] != TCPOPT_MPTCP or opt[1] != n:
        if n >= 2 and opt[0] == TCPOPT_MPTCP and opt[1] != n:
            raise DecodeError(f"MPTCP option: length byte {opt[1]} but {n} bytes given")
        if n >= 1 and opt[0] != TCPOPT_MPTCP:
            raise DecodeError(f"not an MPTCP option: kind {opt[0]}, expected {TCPOPT_MPTCP}")
        raise DecodeError(f"MPTCP option of {n} bytes: truncated (kind, length and subtype need 3)")
    b2 = opt[2]
    st = b2 >> 4
    if st >= _N_KNOWN:
        return MptcpOption(st, _RAW, 0, b2 & 0xF, raw=opt[3:])
    if strict:
        return _PARSERS[st](opt, n, b2)
    try:
        return _PARSERS[st](opt, n, b2)
    except DecodeError:
        return MptcpOption(st, _RAW | _MALFORMED, 0, b2 & 0xF, raw=opt[3:])


# ============================================================================ encode


def _u(value: int, bits: int, name: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"MPTCP option field {name}={value!r} does not fit in {bits} bits")
    return value


def _b(value: bytes, length: int, name: str) -> bytes:
    if len(value) != length:
        raise ValueError(f"MPTCP option field {name} must be {length} bytes, got {len(value)}")
    return bytes(value)


def _hdr(n: int, subtype: int, nibble: int) -> bytes:
    return _HDR.pack(TCPOPT_MPTCP, n, subtype << 4 | _u(nibble, 4, "nibble"))


def _dss_layout(present: int) -> tuple[int, int]:
    """(layout flag bits, option length) that ``present`` calls for."""
    flags = 0
    n = TCPOLEN_MPTCP_DSS_BASE
    if present & _DATA_ACK:
        flags |= MPTCP_DSS_HAS_ACK
        if present & _DATA_ACK64:
            flags |= MPTCP_DSS_ACK64
            n += TCPOLEN_MPTCP_DSS_ACK64
        else:
            n += TCPOLEN_MPTCP_DSS_ACK32
    if present & _MAP:
        flags |= MPTCP_DSS_HAS_MAP
        if present & _DSN64:
            flags |= MPTCP_DSS_DSN64
            n += TCPOLEN_MPTCP_DSS_MAP64
        else:
            n += TCPOLEN_MPTCP_DSS_MAP32
        if present & _CSUM:
            n += TCPOLEN_MPTCP_DSS_CHECKSUM
    return flags, n


def option_length(o: MptcpOption) -> int:
    """On-wire length of ``o`` (kind and length bytes included), without encoding it."""
    st, p = o.subtype, o.present
    if p & _RAW:
        return TCPOLEN_MPTCP_MIN + len(o.raw)
    if st == Subtype.DSS:
        return _dss_layout(p)[1]
    return len(encode_mptcp(o))


def encode_mptcp(o: MptcpOption) -> bytes:
    """Write ``o`` as one MPTCP option (kind, length, body).

    ``present`` decides the layout. Flag bits that decide a layout on the wire (DSS A/a/M/m, ADD_ADDR E) must
    agree with ``present``, else :class:`ValueError`; so do field sizes. Parsed options re-encode to the
    bytes they came from.
    """
    st, p = o.subtype, o.present
    if p & _RAW:
        n = TCPOLEN_MPTCP_MIN + len(o.raw)
        if n > 255:
            raise ValueError("MPTCP raw option body too long")
        return _hdr(n, _u(st, 4, "subtype"), o.flags) + bytes(o.raw)
    if st == Subtype.DSS:
        if p & ~_DSS_FIELDS:
            raise ValueError(f"DSS cannot carry {Has(p & ~_DSS_FIELDS)!r}")
        if p & (_DATA_ACK64 | _DATA_ACK) == _DATA_ACK64 or p & (_DSN64 | _MAP) == _DSN64 or \
                p & (_CSUM | _MAP) == _CSUM:
            raise ValueError("DSS: DATA_ACK64 needs DATA_ACK, DSN64 and CSUM need MAP")
        layout, n = _dss_layout(p)
        # a without A and m without M carry no field: allowed (kept byte for byte)
        wire = _u(o.flags, 8, "flags")
        if wire & MPTCP_DSS_HAS_ACK != layout & MPTCP_DSS_HAS_ACK or \
                wire & MPTCP_DSS_HAS_MAP != layout & MPTCP_DSS_HAS_MAP or \
                (layout & MPTCP_DSS_HAS_ACK and wire & MPTCP_DSS_ACK64 != layout & MPTCP_DSS_ACK64) or \
                (layout & MPTCP_DSS_HAS_MAP and wire & MPTCP_DSS_DSN64 != layout & MPTCP_DSS_DSN64):
            raise ValueError(f"DSS flags 0x{wire:02x} disagree with present={Has(p)!r} (layout 0x{layout:02x})")
        parts = [_HDR4.pack(TCPOPT_MPTCP, n, Subtype.DSS << 4 | _u(o.rsv, 4, "rsv"), wire)]
        if p & _DATA_ACK:
            parts.append(_U64.pack(_u(o.data_ack, 64, "data_ack")) if p & _DATA_ACK64
                         else _U32.pack(_u(o.data_ack, 32, "data_ack")))
        if p & _MAP:
            if p & _DSN64:
                parts.append(_DSS_MAP64.pack(_u(o.data_seq, 64, "data_seq"), _u(o.subflow_seq, 32, "subflow_seq"),
                                             _u(o.data_len, 16, "data_len")))
            else:
                parts.append(_DSS_MAP32.pack(_u(o.data_seq, 32, "data_seq"), _u(o.subflow_seq, 32, "subflow_seq"),
                                             _u(o.data_len, 16, "data_len")))
            if p & _CSUM:
                parts.append(_U16.pack(_u(o.csum, 16, "csum")))
        return b"".join(parts)
    if st == Subtype.MP_CAPABLE:
        n = _MPC_LEN.get(p)
        if n is None:
            raise ValueError(f"MP_CAPABLE cannot carry {Has(p)!r}: use none, SNDR_KEY, SNDR_KEY|RCVR_KEY, "
                             "+DATA_LEN, +CSUM")
        out = _HDR4.pack(TCPOPT_MPTCP, n, Subtype.MP_CAPABLE << 4 | _u(o.version, 4, "version"),
                         _u(o.flags, 8, "flags"))
        if p & _SNDR_KEY:
            out += _b(o.sndr_key, MPTCP_KEY_LEN, "sndr_key")
        if p & _RCVR_KEY:
            out += _b(o.rcvr_key, MPTCP_KEY_LEN, "rcvr_key")
        if p & _DATA_LEN:
            out += _U16.pack(_u(o.data_len, 16, "data_len"))
        if p & _CSUM:
            out += _U16.pack(_u(o.csum, 16, "csum"))
        return out
    if st == Subtype.MP_JOIN:
        if p == _ADDR_ID | _TOKEN | _NONCE:
            return _hdr(TCPOLEN_MPTCP_MPJ_SYN, 1, o.flags) + _MPJ_SYN.pack(
                _u(o.addr_id, 8, "addr_id"), _u(o.token, 32, "token"), _u(o.nonce, 32, "nonce"))
        if p == _ADDR_ID | _THMAC | _NONCE:
            return _hdr(TCPOLEN_MPTCP_MPJ_SYNACK, 1, o.flags) + _MPJ_SYNACK.pack(
                _u(o.addr_id, 8, "addr_id"), _b(o.thmac, MPTCPOPT_THMAC_LEN, "thmac"), _u(o.nonce, 32, "nonce"))
        if p == _HMAC:
            rsv = _u(o.rsv, 12, "rsv")
            return _HDR4.pack(TCPOPT_MPTCP, TCPOLEN_MPTCP_MPJ_ACK, 1 << 4 | rsv >> 8, rsv & 0xFF) + \
                _b(o.hmac, MPTCPOPT_HMAC_LEN, "hmac")
        raise ValueError(f"MP_JOIN cannot carry {Has(p)!r}: SYN is ADDR_ID|TOKEN|NONCE, SYN-ACK "
                         "ADDR_ID|THMAC|NONCE, ACK HMAC")
    if st == Subtype.ADD_ADDR:
        if p & ~(_ADDR_ID | _ADDR | _PORT | _AHMAC) or p & (_ADDR_ID | _ADDR) != _ADDR_ID | _ADDR:
            raise ValueError(f"ADD_ADDR needs ADDR_ID|ADDR (+PORT, +AHMAC), got {Has(p)!r}")
        has_hmac = bool(p & _AHMAC)
        if bool(o.flags & MPTCP_ADDR_ECHO) == has_hmac:
            raise ValueError("ADD_ADDR: the E (echo) flag must be set exactly when there is no HMAC")
        n = _ADD_ADDR_LEN.get((len(o.addr), bool(p & _PORT), has_hmac))
        if n is None:
            raise ValueError(f"ADD_ADDR address must be 4 or 16 bytes, got {len(o.addr)}")
        out = _hdr(n, 3, o.flags) + bytes((_u(o.addr_id, 8, "addr_id"),)) + bytes(o.addr)
        if p & _PORT:
            out += _U16.pack(_u(o.port, 16, "port"))
        if has_hmac:
            out += _b(o.ahmac, MPTCP_ADD_ADDR_HMAC_LEN, "ahmac")
        return out
    if st == Subtype.REMOVE_ADDR:
        if p != _RM_IDS or not o.rm_ids:
            raise ValueError("REMOVE_ADDR carries RM_IDS, with at least one id")
        n = TCPOLEN_MPTCP_RM_ADDR_BASE + len(o.rm_ids)
        if n > 255:
            raise ValueError("REMOVE_ADDR: too many ids")
        return _hdr(n, 4, o.rsv) + bytes(o.rm_ids)
    if st == Subtype.MP_PRIO:
        if p == 0:
            return _hdr(TCPOLEN_MPTCP_PRIO, 5, o.flags)
        if p == _ADDR_ID:
            return _hdr(TCPOLEN_MPTCP_PRIO_ID, 5, o.flags) + bytes((_u(o.addr_id, 8, "addr_id"),))
        raise ValueError(f"MP_PRIO carries nothing or ADDR_ID, got {Has(p)!r}")
    if st == Subtype.MP_FAIL or st == Subtype.MP_FASTCLOSE:
        rsv = _u(o.rsv, 12, "rsv")
        if st == Subtype.MP_FAIL:
            if p != _FAIL_SEQ:
                raise ValueError(f"MP_FAIL carries FAIL_SEQ, got {Has(p)!r}")
            n, body = TCPOLEN_MPTCP_FAIL, _U64.pack(_u(o.fail_seq, 64, "fail_seq"))
        else:
            if p != _RCVR_KEY:
                raise ValueError(f"MP_FASTCLOSE carries RCVR_KEY, got {Has(p)!r}")
            n, body = TCPOLEN_MPTCP_FASTCLOSE, _b(o.rcvr_key, MPTCP_KEY_LEN, "rcvr_key")
        return _HDR4.pack(TCPOPT_MPTCP, n, st << 4 | rsv >> 8, rsv & 0xFF) + body
    if st == Subtype.MP_TCPRST:
        if p != _REASON:
            raise ValueError(f"MP_TCPRST carries REASON, got {Has(p)!r}")
        return _hdr(TCPOLEN_MPTCP_RST, 8, o.flags) + bytes((_u(o.reason, 8, "reason"),))
    raise ValueError(f"MPTCP subtype {st} is not known: give its body as raw with present=Has.RAW")


# ============================================================================ crypto helpers (RFC 8684)


def _key(key: bytes | int) -> bytes:
    if isinstance(key, int):
        return _U64.pack(key)
    if len(key) != MPTCP_KEY_LEN:
        raise ValueError(f"an MPTCP key is {MPTCP_KEY_LEN} bytes, got {len(key)}")
    return bytes(key)


def _nonce(nonce: bytes | int) -> bytes:
    if isinstance(nonce, int):
        return _U32.pack(nonce)
    if len(nonce) != MPTCP_NONCE_LEN:
        raise ValueError(f"an MP_JOIN random number is {MPTCP_NONCE_LEN} bytes, got {len(nonce)}")
    return bytes(nonce)


def _addr_bytes(addr) -> bytes:
    if isinstance(addr, (bytes, bytearray, memoryview)):
        return bytes(addr)
    return ipaddress.ip_address(addr).packed


def mptcp_token(key: bytes | int) -> int:
    """The 32-bit token of a connection key: the most significant 32 bits of SHA-256(key) (RFC 8684 §3.2).

    ``key`` is the 8 key bytes as on the wire (an int is taken as their big-endian value).
    """
    return int.from_bytes(hashlib.sha256(_key(key)).digest()[:MPTCP_TOKEN_LEN], "big")


def mptcp_idsn(key: bytes | int) -> int:
    """The initial data sequence number of a key: the least significant 64 bits of SHA-256(key) (§3.1)."""
    return _U64.unpack_from(hashlib.sha256(_key(key)).digest(), 24)[0]


def join_hmac(key_a: bytes | int, key_b: bytes | int, nonce_a: bytes | int, nonce_b: bytes | int) -> bytes:
    """HMAC-SHA256(key = Key-A || Key-B, msg = R-A || R-B), all 32 bytes (RFC 8684 §3.2).

    For a join from host A to host B: B's SYN-ACK carries ``join_hmac(key_b, key_a, r_b, r_a)[:8]`` (the
    leftmost 64 bits); A's third ACK carries ``join_hmac(key_a, key_b, r_a, r_b)[:20]`` (leftmost 160 bits).
    Keys are the MP_CAPABLE keys of the two hosts; nonces the 32-bit random numbers of the MP_JOIN SYN and
    SYN-ACK (ints or 4 bytes).
    """
    return _hmac.digest(_key(key_a) + _key(key_b), _nonce(nonce_a) + _nonce(nonce_b), "sha256")


def add_addr_hmac(key_a: bytes | int, key_b: bytes | int, addr_id: int, addr, port: int | None = 0) -> bytes:
    """The 8-byte truncated HMAC of an ADD_ADDR sent by host A (RFC 8684 §3.4.1).

    HMAC-SHA256(key = Key-A || Key-B, msg = address id (1) || address (4 or 16) || port (2, zero when the
    option has no port)), truncated to its RIGHTMOST 64 bits (as Linux ``add_addr_generate_hmac``).
    ``addr``: bytes, str or an ipaddress object.
    """
    msg = bytes((addr_id,)) + _addr_bytes(addr) + _U16.pack(port or 0)
    return _hmac.digest(_key(key_a) + _key(key_b), msg, "sha256")[-MPTCP_ADD_ADDR_HMAC_LEN:]
