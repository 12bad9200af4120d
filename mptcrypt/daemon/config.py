"""The daemon's settings: the engine's Config plus what only the edges use, read from a TOML file and flags.

Example `mptcrypt.toml`::

    ports = "all"              # or "80,443,5000-5100": which TCP ports the daemon intercepts
    resume = true              # resume cached sessions with NEXTK1 (no public-key operation)
    policy = "opportunistic"   # default policy: opportunistic | required | off
    pub_ciphers = ["x25519", "p256", "rsa2048"]
    sym_ciphers = ["aes128", "chacha20"]

    [[rule]]                   # first matching rule wins; a rule needs `policy` and `port` and/or `peer`
    port = "22"
    policy = "required"

    [[rule]]
    peer = "10.0.9.0/24"
    policy = "off"

Nothing is ignored, because an ignored key can only make protection weaker than the file says (a misspelt `peers`
in a rule would turn that rule into one for every peer): an unknown key at any level, a value of the wrong type
(`queue_num = 4242.7`, `resume = "yes"`) or a file that cannot be read is a ConfigError with a one-line message.
`mptcrypt daemon --check-config FILE` runs exactly this check without starting anything.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mptcrypt.constants import DEFAULT_QUEUE_NUM, PubCipher, SymCipher
from mptcrypt.core.config import Config, Policy, PolicyRule
from mptcrypt.errors import ConfigError

PUB_CIPHER_NAMES = {"x25519": PubCipher.X25519, "p256": PubCipher.P256, "rsa2048": PubCipher.RSA2048_E3}
SYM_CIPHER_NAMES = {"aes128": SymCipher.AES128, "chacha20": SymCipher.CHACHA20}
RULE_KEYS = ("peer", "policy", "port")
# numeric settings: name -> (type, smallest value allowed)
COUNTS = {"queue_num": 0, "workers": 1, "max_connections": 1, "max_held_per_connection": 0, "max_sessions_cached": 0,
          "init_retries": 0, "rekey_bytes": 1}
SECONDS = {"init_rto": 0.001, "idle_timeout": 0.0, "closed_linger": 0.0, "key_lifetime": 0.0,
           "session_lifetime": 0.0, "rekey_interval": 0.001}
FLAGS = ("fail_open", "resume", "refuse_downgrade")
OPTION_NAMES = {"resume": "--no-resume"}  # settings whose command-line option is not --KEY
LAST_QUEUE = 65534  # NFQUEUE numbers are 16 bits; 65535 is taken by --queue-balance ranges
MAX_QUEUE_NUM = LAST_QUEUE - 1  # queue_num and its SYN lane queue_num + 1 (daemon/lanes.py)
MAX_WORKERS = 16  # `workers`: processes on queues queue_num .. queue_num + workers - 1, their SYN lanes after (daemon/workers.py)


@dataclass
class DaemonConfig(Config):
    """Config (what the engine reads) plus the edges' settings. The engine is handed the whole object."""

    ports: tuple[tuple[int, int], ...] = ()  # () = intercept every TCP port
    queue_num: int = DEFAULT_QUEUE_NUM
    workers: int = 1  # worker processes, one per queue of --queue-balance (daemon/workers.py)
    fail_open: bool = False
    source: str | None = None  # the file it was read from, None: defaults and flags only


KNOWN_KEYS = ("ports", "policy", "rule", "pub_ciphers", "sym_ciphers", *FLAGS, *COUNTS, *SECONDS)


def parse_ports(spec: str | int) -> tuple[tuple[int, int], ...]:
    """'all' -> (); '80,443,5000-5100' -> ((80, 80), (443, 443), (5000, 5100)); 22 -> ((22, 22),). () = every port."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise ConfigError(f"ports must be a string like '80,443,5000-5100' or 'all', not {spec!r}")
    spec = str(spec).strip()
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
            raise ConfigError(f"bad port {part!r} in {spec!r}: use numbers and ranges like '80,443,5000-5100'") from None
        if not (1 <= lo_n <= hi_n <= 65535):
            raise ConfigError(f"bad port range {part!r}: ports go from 1 to 65535, low end first")
        ranges.append((lo_n, hi_n))
    if len(ranges) > 15:  # iptables multiport takes at most 15 ports (a range counts as two)
        raise ConfigError(f"too many port entries in {spec!r} (at most 15)")
    return tuple(ranges)


def format_ports(ports: tuple[tuple[int, int], ...]) -> str:
    """((80, 80), (5000, 5100)) -> '80,5000-5100'; () -> 'all' (the syntax `--ports` takes)."""
    if not ports:
        return "all"
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports)


def read_toml(path: str | Path) -> dict:
    """The file's TOML table; ConfigError (one line) for anything that stops it being read or parsed."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give the path of a .toml file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None, **overrides) -> DaemonConfig:
    """Defaults, then the TOML file, then the non-None keyword overrides (command-line flags)."""
    cfg = DaemonConfig(source=None if path is None else str(path))
    if path is not None:
        apply(cfg, read_toml(path), str(path))
    for key, value in overrides.items():
        if value is not None:  # each flag checked alone, so the message names the option
            apply(cfg, {key: value}, OPTION_NAMES.get(key, "--" + key.replace("_", "-")))
    return cfg


def apply(cfg: DaemonConfig, data: dict, where: str) -> DaemonConfig:
    """Check every key and value of `data` and set them on `cfg`. ConfigError names the first problem."""
    _no_unknown(data, KNOWN_KEYS, where)
    for key, value in data.items():
        if key == "ports":
            cfg.ports = _at(where, parse_ports, value)
        elif key == "policy":
            cfg.policy = _policy(value, where)
        elif key == "rule":
            if isinstance(value, dict):
                raise ConfigError(f"{where}: write each rule as [[rule]] (an array of tables), not [rule]")
            if not isinstance(value, list):
                raise ConfigError(f"{where}: rule must be a list of [[rule]] tables, not {value!r}")
            cfg.rules = [_rule(r, f"{where}: rule {n + 1}") for n, r in enumerate(value)]
        elif key == "pub_ciphers":
            cfg.pub_ciphers = _cipher_list(value, PUB_CIPHER_NAMES, where, key)
        elif key == "sym_ciphers":
            cfg.sym_ciphers = _cipher_list(value, SYM_CIPHER_NAMES, where, key)
        elif key in FLAGS:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
            setattr(cfg, key, value)
        elif key in COUNTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: {key} must be a whole number, not {value!r}")
            if value < COUNTS[key]:
                raise ConfigError(f"{where}: {key} must be at least {COUNTS[key]}, not {value}")
            setattr(cfg, key, value)
        else:  # SECONDS
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: {key} must be a number of seconds, not {value!r}")
            if value < SECONDS[key]:
                raise ConfigError(f"{where}: {key} must be at least {SECONDS[key]:g} s, not {value}")
            setattr(cfg, key, float(value))
    if not 0 <= cfg.queue_num <= MAX_QUEUE_NUM:
        raise ConfigError(f"{where}: queue_num must be between 0 and {MAX_QUEUE_NUM}")
    if cfg.workers > MAX_WORKERS:
        raise ConfigError(f"{where}: workers must be between 1 and {MAX_WORKERS}, not {cfg.workers}")
    last = cfg.queue_num + 2 * cfg.workers - 1  # the segments' queues, then as many SYN lane queues
    if last > LAST_QUEUE:
        raise ConfigError(f"{where}: queues {cfg.queue_num}..{last} of {cfg.workers} workers and their SYN lanes "
                          f"end above {LAST_QUEUE}: lower queue_num")
    return cfg


def describe(cfg: DaemonConfig) -> dict:
    """What the daemon enforces, in the file's own terms (for `mptcrypt status` and `--check-config`)."""
    pub = {v: k for k, v in PUB_CIPHER_NAMES.items()}
    sym = {v: k for k, v in SYM_CIPHER_NAMES.items()}
    rules = []
    for rule in cfg.rules:
        row = {"policy": rule.policy.value}
        if rule.ports:
            row["port"] = format_ports(rule.ports)
        if rule.peer is not None:
            row["peer"] = str(rule.peer)
        rules.append(row)
    return {
        "config": cfg.source,
        "queue": cfg.queue_num,
        "workers": cfg.workers,
        "ports": format_ports(cfg.ports),
        "policy": cfg.policy.value,
        "rules": rules,
        "pub_ciphers": [pub[c] for c in cfg.pub_ciphers],
        "sym_ciphers": [sym[c] for c in cfg.sym_ciphers],
        "resume": cfg.resume,
        "fail_open": cfg.fail_open,
    }


def describe_lines(info: dict) -> list[str]:
    """describe()'s dict as the indented lines `mptcrypt status` prints under its first line."""
    rules = [" ".join(f"{k} {r[k]}" for k in ("port", "peer") if k in r) + f" -> {r['policy']}" for r in info["rules"]]
    return [
        f"  policy {info['policy']} on ports {info['ports']}; rules, first match wins: {'; '.join(rules) or 'none'}",
        f"  ciphers: public {','.join(info['pub_ciphers'])}; symmetric {','.join(info['sym_ciphers'])}; "
        f"resumption {'on' if info['resume'] else 'off'}",
        f"  config: {info['config'] or 'defaults and command-line options (no file)'}",
    ]


# --- one value each ---------------------------------------------------------------------------------------------


def _no_unknown(data: dict, known: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))}){hint}")


def _at(where: str, parse, value):
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _policy(value, where: str) -> Policy:
    try:
        return Policy(value)
    except ValueError:
        choices = ", ".join(p.value for p in Policy)
        raise ConfigError(f"{where}: unknown policy {value!r} (choose {choices})") from None


def _rule(raw, where: str) -> PolicyRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a rule is a [[rule]] table, not {raw!r}")
    _no_unknown(raw, RULE_KEYS, where)
    if "policy" not in raw or not ({"port", "peer"} & set(raw)):
        raise ConfigError(f"{where}: a rule needs `policy` and at least one of `port`, `peer`")
    peer = None
    if "peer" in raw:
        try:
            if not isinstance(raw["peer"], str):
                raise ValueError
            peer = ipaddress.ip_network(raw["peer"], strict=False)
        except ValueError:
            raise ConfigError(f"{where}: bad peer {raw['peer']!r} (an address or a network like 10.0.0.0/24)") from None
    ports = _at(where, parse_ports, raw["port"]) if "port" in raw else ()
    return PolicyRule(policy=_policy(raw["policy"], where), ports=ports, peer=peer)


def _cipher_list(value, names: dict, where: str, key: str) -> tuple:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list like {list(names)!r}, not {value!r}")
    out = []
    for name in value:
        if name not in names:
            raise ConfigError(f"{where}: unknown {key} entry {name!r} (choose from {', '.join(names)})")
        out.append(names[name])
    if not out:
        raise ConfigError(f"{where}: {key} must not be empty")
    return tuple(out)
