"""The daemon's configuration: one dataclass, built from defaults, a TOML file and command-line flags.

Example `mptcrypt.toml`::

    ports = "all"              # or "80,443,5000-5100": which TCP ports the daemon intercepts
    resume = true              # resume cached sessions with NEXTK1 (no public-key operation)
    policy = "opportunistic"   # default policy: opportunistic | required | off
    pub_ciphers = ["x25519", "p256", "rsa2048"]
    sym_ciphers = ["aes128", "chacha20"]

    [[rule]]                   # first matching rule wins; a rule needs `port` and/or `peer`
    port = "22"
    policy = "required"

    [[rule]]
    peer = "10.0.9.0/24"
    policy = "off"
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from mptcrypt.constants import DEFAULT_PUB_CIPHERS, DEFAULT_QUEUE_NUM, DEFAULT_SYM_CIPHERS, PubCipher, SymCipher
from mptcrypt.errors import ConfigError


class Policy(str, Enum):
    OPPORTUNISTIC = "opportunistic"  # encrypt when the peer speaks mptcrypt, plain otherwise
    REQUIRED = "required"  # refuse (RST) connections the peer will not protect
    OFF = "off"  # never touch these connections


PUB_CIPHER_NAMES = {"x25519": PubCipher.X25519, "p256": PubCipher.P256, "rsa2048": PubCipher.RSA2048_E3}
SYM_CIPHER_NAMES = {"aes128": SymCipher.AES128, "chacha20": SymCipher.CHACHA20}


def parse_ports(spec: str) -> tuple[tuple[int, int], ...]:
    """'all' -> (); '80,443,5000-5100' -> ((80, 80), (443, 443), (5000, 5100)). () means every port."""
    spec = spec.strip()
    if spec in ("all", "*", ""):
        return ()
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        try:
            lo_n = int(lo)
            hi_n = int(hi) if hi else lo_n
        except ValueError:
            raise ConfigError(f"bad port {part!r} in {spec!r}: use numbers and ranges like '80,443,5000-5100'")
        if not (1 <= lo_n <= hi_n <= 65535):
            raise ConfigError(f"bad port range {part!r}: ports go from 1 to 65535, low end first")
        ranges.append((lo_n, hi_n))
    if len(ranges) > 15:  # iptables multiport takes at most 15 ports (a range counts as two)
        raise ConfigError(f"too many port entries in {spec!r} (at most 15)")
    return tuple(ranges)


def port_in(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return not ranges or any(lo <= port <= hi for lo, hi in ranges)


def _policy(value: str, where: str) -> Policy:
    try:
        return Policy(value)
    except ValueError:
        choices = ", ".join(p.value for p in Policy)
        raise ConfigError(f"{where}: unknown policy {value!r} (choose {choices})") from None


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
    ports: tuple[tuple[int, int], ...] = ()  # () = intercept every TCP port
    policy: Policy = Policy.OPPORTUNISTIC
    rules: list[PolicyRule] = field(default_factory=list)
    pub_ciphers: tuple[PubCipher, ...] = DEFAULT_PUB_CIPHERS
    sym_ciphers: tuple[SymCipher, ...] = DEFAULT_SYM_CIPHERS
    queue_num: int = DEFAULT_QUEUE_NUM
    fail_open: bool = False
    # core limits and timers (seconds)
    max_connections: int = 65536
    max_held_per_connection: int = 64
    max_sessions_cached: int = 4096
    init_rto: float = 0.2  # first INIT1/INIT2 retransmission timeout, doubled each try
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

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "Config":
        """Defaults, then the TOML file, then non-None keyword overrides (command-line flags)."""
        data: dict = {}
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    data = tomllib.load(fh)
            except FileNotFoundError:
                raise ConfigError(f"config file {path} not found") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data, where=str(path or "command line"))

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "Config":
        cfg = cls()
        known = {"ports", "policy", "rule", "pub_ciphers", "sym_ciphers", "queue_num", "fail_open"}
        known |= {"max_connections", "max_held_per_connection", "max_sessions_cached", "init_rto"}
        known |= {"init_retries", "idle_timeout", "closed_linger", "key_lifetime", "resume", "refuse_downgrade"}
        known |= {"session_lifetime", "rekey_bytes", "rekey_interval"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        for key, value in data.items():
            if key == "ports":
                cfg.ports = parse_ports(str(value))
            elif key == "policy":
                cfg.policy = _policy(str(value), where)
            elif key == "rule":
                cfg.rules = [_rule(r, f"{where} rule {n + 1}") for n, r in enumerate(value)]
            elif key == "pub_ciphers":
                cfg.pub_ciphers = _cipher_list(value, PUB_CIPHER_NAMES, where, "pub_ciphers")
            elif key == "sym_ciphers":
                cfg.sym_ciphers = _cipher_list(value, SYM_CIPHER_NAMES, where, "sym_ciphers")
            elif key in ("fail_open", "resume", "refuse_downgrade"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
                setattr(cfg, key, value)
            else:
                expected = type(getattr(cfg, key))
                try:
                    setattr(cfg, key, expected(value))
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}: {key} must be a {expected.__name__}, not {value!r}") from None
                if getattr(cfg, key) < 0:
                    raise ConfigError(f"{where}: {key} must not be negative")
        if not 0 <= cfg.queue_num <= 65534:
            raise ConfigError(f"{where}: queue_num must be between 0 and 65534")
        return cfg


def _rule(raw: dict, where: str) -> PolicyRule:
    if not isinstance(raw, dict) or "policy" not in raw or not ({"port", "peer"} & set(raw)):
        raise ConfigError(f"{where}: a rule needs `policy` and at least one of `port`, `peer`")
    peer = None
    if "peer" in raw:
        try:
            peer = ipaddress.ip_network(str(raw["peer"]), strict=False)
        except ValueError:
            raise ConfigError(f"{where}: bad peer {raw['peer']!r} (an address or a network like 10.0.0.0/24)") from None
    ports = parse_ports(str(raw["port"])) if "port" in raw else ()
    return PolicyRule(policy=_policy(str(raw["policy"]), where), ports=ports, peer=peer)


def _cipher_list(value, names: dict, where: str, key: str) -> tuple:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    out = []
    for name in value:
        if name not in names:
            raise ConfigError(f"{where}: unknown {key} entry {name!r} (choose from {', '.join(names)})")
        out.append(names[name])
    if not out:
        raise ConfigError(f"{where}: {key} must not be empty")
    return tuple(out)
