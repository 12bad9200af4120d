"""The objects the engine keeps: a Session (one key chain), a Connection (one TCP or MPTCP connection) and a
Subflow (one TCP flow with its keys and state)."""

from __future__ import annotations

import functools
import ipaddress

from mptcrypt.crypto.keyschedule import KeyChain, direction_secrets, rekey_secret
from mptcrypt.crypto.segment import SegmentCipher
from mptcrypt.core.state import State

FlowKey = tuple  # (local addr bytes, local port, remote addr bytes, remote port)
JOIN_WINDOW = 32  # join indices of the peer accepted past the highest it used


@functools.lru_cache(maxsize=4096)  # per SYN (policy rules) and per event; ipaddress formatting costs ~2 µs
def fmt_addr(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def fmt_flow(key: FlowKey) -> str:
    la, lp, ra, rp = key
    return f"{fmt_addr(la)}:{lp} > {fmt_addr(ra)}:{rp}" if len(la) == 4 else f"[{fmt_addr(la)}]:{lp} > [{fmt_addr(ra)}]:{rp}"


class Session:
    """One tcpcrypt session: ss[0] and its NEXTKEY chain, shared by every subflow and resumed connection.

    Indices: 0 is the connection that ran the public-key handshake. The side that sent INIT1 (the session's
    initiator) allocates odd indices, the other side even ones, so both can start joins or resumed connections
    at the same time without colliding. Each index keys exactly one subflow (checked by `claim`)."""

    __slots__ = ("chain", "initiator", "pub_cipher", "sym_cipher", "_next_own", "_peer_top", "used", "peer_addr",
                 "resume_ids", "created", "__weakref__")  # (daemon/workers.Replica finds live sessions by key)

    def __init__(self, ss0: bytes, initiator: bool, pub_cipher, sym_cipher, peer_addr: bytes):
        self.chain = KeyChain(ss0)
        self.initiator = initiator
        self.pub_cipher = pub_cipher
        self.sym_cipher = sym_cipher
        self._next_own = 1 if initiator else 2
        self._peer_top = 0 if initiator else -1  # highest index of the peer's parity used so far
        self.used: dict[int, FlowKey] = {0: None}
        self.peer_addr = peer_addr
        self.resume_ids: dict[int, bytes] = {}  # index -> resumption id registered for it
        self.created: float | None = None  # when the public-key handshake made it (set when first cached)

    def own_parity(self, index: int) -> bool:
        return index % 2 == (1 if self.initiator else 0)

    def allocate(self, lane: int = 0, lanes: int = 1) -> int:
        """The next unused index of our own parity (for a join or a resumed connection we start). With `lanes`
        workers (`mptcrypt daemon --workers N`), worker `lane` takes only the indices whose ordinal is `lane` mod
        `lanes`: two workers never allocate the same index (docs/protocol.md §Workers)."""
        while self._next_own in self.used or (self._next_own - 1) // 2 % lanes != lane:
            self._next_own += 2
        i = self._next_own
        if i > KeyChain.MAX_INDEX:
            raise ValueError("key chain exhausted")
        self._next_own += 2
        return i

    def claim(self, index: int, flow: FlowKey) -> bool:
        """Mark `index` used by `flow`. False if another flow already used it (a replay) or it is out of range."""
        if not 0 < index <= KeyChain.MAX_INDEX:
            return False
        owner = self.used.get(index, flow)
        if owner != flow:
            return False
        self.used[index] = flow
        if not self.own_parity(index) and index > self._peer_top:
            self._peer_top = index
        elif self.own_parity(index) and index >= self._next_own:  # a sibling worker's: allocate above it
            self._next_own = index + 2
        return True

    def in_join_window(self, index: int) -> bool:
        """A peer's join index we are willing to compute keys for: of its parity, unused, at most JOIN_WINDOW of
        its indices past the highest it used (each index costs one HMAC forward from the last; an index of 0xFFFF
        would cost 65,535 and megabytes before the proof is even checked: issue 12 item 6)."""
        return 0 < index <= KeyChain.MAX_INDEX and not self.own_parity(index) and index not in self.used \
            and index <= self._peer_top + 2 * JOIN_WINDOW

    def peer_next_indices(self, count: int) -> list[int]:
        """The next `count` unused indices of the peer's parity (candidates for a resumption by the peer); fewer
        near the end of the chain (NEXTK1 carries 16 bits: the peer then falls back to a full handshake)."""
        return [i for i in (self._peer_top + 2 * k for k in range(1, count + 1)) if i <= KeyChain.MAX_INDEX]


class Connection:
    """A TCP connection, or an MPTCP connection with all its subflows: one session index for its sid."""

    __slots__ = ("session", "index", "sid", "resumed", "subflows", "mptcp", "keys", "tokens", "pk_ops")

    def __init__(self, session: Session, index: int, resumed: bool):
        self.session = session
        self.index = index
        self.sid = session.chain.sid(index)
        self.resumed = resumed
        self.subflows: list[Subflow] = []
        self.mptcp = False
        self.keys: dict[str, bytes] = {}  # MP_CAPABLE keys: "local" and/or "remote"
        self.tokens: list[int] = []
        self.pk_ops = 0


class Handshake:
    """A subflow's handshake scratch: held segments, the INIT message and its timer, the client's key pair.
    Nothing on the hot path reads it."""

    __slots__ = ("held", "held_joins", "init_msg", "init_segment", "timer", "rto", "tries", "syn_sent", "rtt",
                 "client_key", "n_c", "pub_list", "pub_cipher", "mptcp_keys", "join_syn", "resume_id",
                 "syn_tsval")

    def __init__(self):
        self.held: list[bytes] = []
        self.held_joins: list[bytes] = []  # join SYNs of this connection sent before its keys existed
        self.init_msg = None  # INIT1 (client) or INIT2 (server) payload, for retransmission
        self.init_segment = None
        self.timer: float | None = None
        self.rto = 0.0
        self.tries = 0
        self.syn_sent: float | None = None  # when our SYN (SYN-ACK) left; None once retransmitted (Karn's rule)
        self.rtt: float | None = None  # the sample the INIT timer was armed with
        self.client_key = None
        self.n_c = b""
        self.pub_list = b""
        self.pub_cipher = None
        self.mptcp_keys: dict[str, bytes] = {}  # MP_CAPABLE keys seen in the SYN/SYN-ACK, before the session exists
        self.join_syn = b""  # the join SYN's whole MP_JOIN option, bound by NEXTK1 and NEXTK2
        self.resume_id = b""  # a resumed connection's resume id, bound by NEXTK1 and NEXTK2
        self.syn_tsval: int | None = None  # our kernel's tsval in its latest join SYN (a restored SYN-ACK echoes it)


class Subflow:
    """One TCP flow as this host sees it. The hot path reads tx/rx, the sequence references and counters only;
    handshake scratch lives in `hs`."""

    __slots__ = (
        "key", "state", "initiator", "policy", "conn", "index", "tx", "rx",
        "isn_local", "isn_remote", "out_ref", "in_ref", "in_ack_max", "confirmed", "hs",
        "mptcp", "join", "addr_id", "backup", "fin_out", "fin_in", "closed_at", "last_seen",
        "bytes_out", "bytes_in", "segments_out", "segments_in", "resumed", "plain_reason", "pk_ops", "created", "unmacked",
        "sym_cipher", "tx_secret", "rx_secret", "rx_next", "rx_prev", "tx_rekey_bytes", "tx_rekey_time",
        "tx_gen_start",
    )

    def __init__(self, key: FlowKey, initiator: bool, policy, now: float):
        self.key = key
        self.state: State | None = None
        self.initiator = initiator
        self.policy = policy
        self.conn: Connection | None = None
        self.index = 0
        self.tx: SegmentCipher | None = None
        self.rx: SegmentCipher | None = None
        self.isn_local = self.isn_remote = None
        self.out_ref = self.in_ref = 0
        self.in_ack_max = 0  # highest extended ack verified on this subflow
        self.confirmed = True  # server: False until a MAC'd segment proves the client has the keys
        self.hs = Handshake()
        self.mptcp = False
        self.join = False
        self.addr_id = None
        self.backup = False
        self.fin_out = self.fin_in = False
        self.closed_at: float | None = None
        self.last_seen = now
        self.created = now
        self.bytes_out = self.bytes_in = self.segments_out = self.segments_in = 0
        self.resumed = False  # keyed by NEXTK1/NEXTK2 on a new connection (index = the resumed ss[i])
        self.plain_reason = ""
        self.pk_ops = 0  # public-key operations done while handling this subflow's segments
        # REKEY (docs/protocol.md §4): each direction's current generation secret, the receiver's next and
        # previous generation ciphers, and when the sender moves on
        self.sym_cipher = None
        self.tx_secret = self.rx_secret = b""
        self.rx_next: SegmentCipher | None = None
        self.rx_prev: SegmentCipher | None = None
        self.tx_rekey_bytes = 1 << 62
        self.tx_rekey_time = float("inf")
        # the first extended seq sent under our current generation; the next REKEY waits for an ack beyond it
        # (-1: generation 0, which the peer holds from the handshake)
        self.tx_gen_start = -1
        self.unmacked = 0  # inbound segments in a row without a MAC option (core/stripped.py)

    def set_keys(self, conn: Connection, index: int, sym_cipher) -> None:
        self.conn = conn
        self.index = index
        ss = conn.session.chain.ss(index)
        self.sym_cipher = sym_cipher
        self.tx_secret = self.rx_secret = ss
        self.tx = SegmentCipher(sym_cipher, direction_secrets(ss, self.initiator))
        self.rx = SegmentCipher(sym_cipher, direction_secrets(ss, not self.initiator))
        if self not in conn.subflows:
            conn.subflows.append(self)

    def rekey_tx(self) -> None:
        """Move our direction to the next key generation; the old secret is forgotten."""
        self.tx_secret = rekey_secret(self.tx_secret, self.initiator)
        self.tx = SegmentCipher(self.sym_cipher, direction_secrets(self.tx_secret, self.initiator))

    def next_rx(self) -> SegmentCipher:
        """The peer's next generation (made on the first segment that does not verify under the current one)."""
        if self.rx_next is None:
            self.rx_next = SegmentCipher(self.sym_cipher, direction_secrets(
                rekey_secret(self.rx_secret, not self.initiator), not self.initiator))
        return self.rx_next

    def follow_rx(self) -> None:
        """The peer moved to the next generation: it becomes current, the current one is kept for segments
        still in flight, the one before is forgotten."""
        self.rx_prev, self.rx, self.rx_next = self.rx, self.next_rx(), None
        self.rx_secret = rekey_secret(self.rx_secret, not self.initiator)

    def row(self) -> dict:
        la, lp, ra, rp = self.key
        return {
            "local": f"{fmt_addr(la)}:{lp}", "remote": f"{fmt_addr(ra)}:{rp}",
            "state": self.state.value if self.state else "new", "role": "initiator" if self.initiator else "responder",
            "kind": "join" if self.join else ("mptcp" if self.mptcp else "tcp"), "index": self.index,
            "addr_id": self.addr_id, "backup": self.backup,
            "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
        }
