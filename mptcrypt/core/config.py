"""The engine's configuration: one dataclass of policy, ciphers, limits and timers, and the policy rules.

Pure values, no I/O. The daemon's own settings (ports, queue, fail-open) and the TOML file that fills all of them
are in `mptcrypt.daemon.config`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from mptcrypt.constants import DEFAULT_PUB_CIPHERS, DEFAULT_SYM_CIPHERS, PubCipher, SymCipher


class Policy(str, Enum):
    OPPORTUNISTIC = "opportunistic"  # encrypt when the peer speaks mptcrypt, plain otherwise
    REQUIRED = "required"  # refuse (RST) connections the peer will not protect
    OFF = "off"  # never touch these connections


def port_in(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return not ranges or any(lo <= port <= hi for lo, hi in ranges)


@dataclass(frozen=True)
class PolicyRule:
    policy: Policy
    ports: tuple[tuple[int, int], ...] = ()  # () = any port
    peer: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def matches(self, peer_addr: str, port: int) -> bool:
        if self.ports and not port_in(port, self.ports):
            return False
        if self.peer is not None:
            addr = ipaddress.ip_address(peer_addr)
            if addr.version != self.peer.version or addr not in self.peer:
                return False
        return True


@dataclass
class Config:
    policy: Policy = Policy.OPPORTUNISTIC
    rules: list[PolicyRule] = field(default_factory=list)
    pub_ciphers: tuple[PubCipher, ...] = DEFAULT_PUB_CIPHERS
    sym_ciphers: tuple[SymCipher, ...] = DEFAULT_SYM_CIPHERS
    # limits and timers (seconds)
    max_connections: int = 65536
    max_held_per_connection: int = 64
    max_sessions_cached: int = 4096
    init_rto: float = 0.1  # floor of the first INIT1/INIT2 retransmission timeout (3 x the SYN RTT), doubled each try
    init_retries: int = 6
    idle_timeout: float = 600.0  # reclaim a silent connection after this long
    closed_linger: float = 10.0  # keep keys this long after FIN/RST so late segments still verify
    key_lifetime: float = 600.0  # regenerate the ephemeral K_C / server key after this long
    resume: bool = True  # offer resumption (NEXTK1) to peers with a cached session
    refuse_downgrade: bool = False  # refuse a plain answer from a peer we hold a session for (it spoke mptcrypt)
    session_lifetime: float = 6 * 3600.0  # a cached session is not resumed after this long (forward secrecy)
    rekey_bytes: int = 1 << 30  # each direction of a subflow moves to fresh keys after this many bytes...
    rekey_interval: float = 3600.0  # ...or this many seconds

    def policy_for(self, peer_addr: str, port: int) -> Policy:
        for rule in self.rules:
            if rule.matches(peer_addr, port):
                return rule.policy
        return self.policy
