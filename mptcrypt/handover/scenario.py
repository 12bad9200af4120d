"""Handover scenarios: a declarative timeline of link events, read from TOML (topologies/scenarios/*.toml).

A scenario file::

    name = "walk-out-of-wifi"
    description = "signal fades (loss, then less bandwidth), then Wi-Fi is gone"
    duration = 12.0          # seconds the workload runs; events happen inside this window
    direction = "down"       # bulk transfer server -> mobile ("up": mobile -> server)
    topo = { wifi_bw = 20, lte_bw = 10 }     # build arguments of topologies/handover.py (also wifi_delay = "10ms")

    setup = [                # applied before any connection opens (same actions, no `at`)
      { action = "backup", intf = "lte", on = true },
    ]

    [[events]]
    at = 3.0
    action = "degrade"
    intf = "wifi"
    loss = 3                 # percent, both directions
    bw = 5                   # Mbit/s
    delay = "60ms"           # one way, each direction (also jitter = "5ms"); a number is milliseconds

Actions (`intf` is a mobile interface: `wifi` or `lte`):

| action     | fields                          | what happens                                                     |
|------------|---------------------------------|------------------------------------------------------------------|
| `degrade`  | `loss` (%), `bw` (Mbit/s),      | `Net.set_link` on that link (both ends); delay and jitter change |
|            | `delay`, `jitter` (one way)     | the link's delay lines at run time                               |
| `restore`  |                                 | the link's bandwidth, loss, delay and jitter from the topology   |
| `down`     |                                 | `Net.link_down`                                                  |
| `up`       | `addr`, `gw`, `server_addr`     | `Net.link_up`; with `addr`, the interface comes back with a new  |
|            |                                 | address (`Net.set_addr`: the MPTCP endpoint follows, new subflow)|
| `addr`     | `addr`, `gw`, `server_addr`     | address change without a link change (`Net.set_addr`)            |
| `backup`   | `on` (bool)                     | endpoint flag backup on/off: `ip mptcp endpoint change` (MP_PRIO)|
| `endpoint` | `on` (bool), `backup` (bool)    | add/remove the interface's MPTCP `subflow` endpoint              |

`server_addr` (e.g. "10.0.3.1/24"): when `addr` is on a subnet the server has no address on, the server's end
of that link gets this address too (the new network's router), so the mobile can reach the server from it.
Pure: parsing and validation only, nothing touches the system.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mptcrypt.errors import ConfigError
from mptcrypt.topo.spec import parse_time_us

REPO = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO / "topologies" / "scenarios"
TOPOLOGY_FILE = REPO / "topologies" / "handover.py"

INTERFACES = ("wifi", "lte")
TOPO_KEYS = frozenset({"wifi_bw", "lte_bw", "wifi_loss", "lte_loss", "wifi_delay", "lte_delay", "nat",
                       "timestamps", "sack"})
DIRECTIONS = ("up", "down")
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # action: (required fields, optional fields) besides at/action/intf/label
    "degrade": (frozenset(), frozenset({"loss", "bw", "delay", "jitter"})),
    "restore": (frozenset(), frozenset()),
    "down": (frozenset(), frozenset()),
    "up": (frozenset(), frozenset({"addr", "gw", "server_addr"})),
    "addr": (frozenset({"addr"}), frozenset({"gw", "server_addr"})),
    "backup": (frozenset({"on"}), frozenset()),
    "endpoint": (frozenset({"on"}), frozenset({"backup"})),
}
COMMON_FIELDS = frozenset({"at", "action", "intf", "label"})
TOP_KEYS = frozenset({"name", "description", "duration", "direction", "topo", "setup", "events", "expect"})
EXPECT_KEYS = frozenset({"new_path"})
MIN_DURATION, MAX_DURATION = 2.0, 600.0


@dataclass(frozen=True)
class Event:
    """One link event. `at` is seconds after the workload started (None for setup steps)."""

    action: str
    intf: str
    at: float | None = None
    loss: float | None = None
    bw: float | None = None
    delay: float | None = None  # ms, one way
    jitter: float | None = None  # ms
    addr: str | None = None
    gw: str | None = None
    server_addr: str | None = None
    on: bool | None = None
    backup: bool | None = None
    label: str | None = None

    def describe(self) -> str:
        """Short text for plots and tables: 'wifi down', 'wifi up 10.0.3.2', 'lte backup off'..."""
        if self.label:
            return self.label
        a, i = self.action, self.intf
        if a == "degrade":
            parts = [f"loss {self.loss:g}%" if self.loss is not None else "", f"{self.bw:g} Mbit/s" if self.bw else "",
                     f"delay {self.delay:g} ms" if self.delay is not None else "",
                     f"jitter {self.jitter:g} ms" if self.jitter is not None else ""]
            return f"{i} degraded ({', '.join(p for p in parts if p)})"
        if a in ("up", "addr") and self.addr:
            return f"{i} {'up' if a == 'up' else 'addr'} {self.addr.split('/')[0]}"
        if a == "backup":
            return f"{i} backup {'on' if self.on else 'off'}"
        if a == "endpoint":
            return f"{i} endpoint {'added' if self.on else 'removed'}"
        return f"{i} {a}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class Scenario:
    name: str
    description: str
    duration: float
    direction: str
    topo_args: dict[str, Any] = field(default_factory=dict)
    setup: list[Event] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    new_path: str | None = None  # interface expected to carry a newly established subflow (checked by tests)
    path: str | None = None

    @property
    def topo_spec(self) -> str:
        """`--topo` spec for topologies/handover.py: 'handover,wifi_bw=20,lte_bw=10'."""
        return ",".join(["handover", *(f"{k}={v!r}" for k, v in self.topo_args.items())])

    def check_delay_lines(self) -> None:
        """A degrade that changes delay or jitter needs the link built with its delay line (this kernel has no
        netem): refused before anything is built, not mid-run."""
        for ev in self.setup + self.events:
            if (ev.delay is not None or ev.jitter is not None) and \
                    self.topo_args.get(f"{ev.intf}_delay", "") in (None, "none"):
                raise ConfigError(f"scenario {self.name}: a degrade changes the delay of {ev.intf}, whose link has no "
                                  f"delay line ({ev.intf}_delay = none, or bench --no-delay): give it a delay")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "duration": self.duration,
            "direction": self.direction, "topo": self.topo_args, "new_path": self.new_path,
            "setup": [e.to_json() for e in self.setup], "events": [e.to_json() for e in self.events],
            "file": self.path,
        }


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what}: expected a number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{what}: must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _cidr(value: Any, what: str) -> str:
    try:
        iface = ipaddress.ip_interface(str(value))
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if "/" not in str(value) or iface.version != 4:
        raise ConfigError(f"{what}: expected an IPv4 address with its prefix length, e.g. '10.0.3.2/24'")
    return str(iface)


def parse_event(raw: Any, what: str, timed: bool, duration: float) -> Event:
    if not isinstance(raw, dict):
        raise ConfigError(f"{what}: expected a table such as {{ at = 3.0, action = \"down\", intf = \"wifi\" }}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"{what}: unknown action {action!r}; known: {', '.join(ACTIONS)}")
    required, optional = ACTIONS[action]
    unknown = set(raw) - COMMON_FIELDS - required - optional
    if unknown:
        raise ConfigError(f"{what} ({action}): unknown field(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(required | optional | {'label'}))}")
    missing = required - set(raw)
    if missing:
        raise ConfigError(f"{what} ({action}): missing field(s) {', '.join(sorted(missing))}")
    intf = raw.get("intf")
    if intf not in INTERFACES:
        raise ConfigError(f"{what}: intf must be one of {', '.join(INTERFACES)}, got {intf!r}")
    at = None
    if timed:
        if "at" not in raw:
            raise ConfigError(f"{what}: missing `at` (seconds after the workload started)")
        at = _number(raw["at"], f"{what}: at", 0.0, duration)
    elif "at" in raw:
        raise ConfigError(f"{what}: setup steps run before the workload and take no `at`")
    kw: dict[str, Any] = {"action": action, "intf": intf, "at": at}
    if "loss" in raw:
        kw["loss"] = _number(raw["loss"], f"{what}: loss (%)", 0.0, 100.0)
    if "bw" in raw:
        kw["bw"] = _number(raw["bw"], f"{what}: bw (Mbit/s)", 0.01, 100_000.0)
    for key in ("delay", "jitter"):
        if key in raw:
            kw[key] = parse_time_us(raw[key], f"{what}: {key} (one way, e.g. '60ms')") / 1000
    if action == "degrade" and not kw.keys() & {"loss", "bw", "delay", "jitter"}:
        raise ConfigError(f"{what}: degrade needs `loss`, `bw`, `delay` and/or `jitter`")
    for key in ("addr", "server_addr"):
        if key in raw:
            kw[key] = _cidr(raw[key], f"{what}: {key}")
    if "gw" in raw:
        try:
            kw["gw"] = str(ipaddress.IPv4Address(str(raw["gw"])))
        except ValueError as exc:
            raise ConfigError(f"{what}: gw: {exc}") from None
        if "addr" in kw and ipaddress.IPv4Address(kw["gw"]) not in ipaddress.ip_interface(kw["addr"]).network:
            raise ConfigError(f"{what}: gw {kw['gw']} is not on {kw['addr']}")
    if "server_addr" in kw and "addr" not in kw:
        raise ConfigError(f"{what}: server_addr only makes sense with addr")
    for key in ("on", "backup"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise ConfigError(f"{what}: {key} must be true or false")
            kw[key] = raw[key]
    if "label" in raw:
        kw["label"] = str(raw["label"])
    return Event(**kw)


def parse_scenario(data: dict[str, Any], name: str, path: str | None = None) -> Scenario:
    what = f"scenario {name}"
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_KEYS))}")
    duration = _number(data.get("duration", 12.0), f"{what}: duration", MIN_DURATION, MAX_DURATION)
    direction = data.get("direction", "down")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{what}: direction must be 'up' (mobile -> server) or 'down', got {direction!r}")
    topo = data.get("topo", {})
    if not isinstance(topo, dict) or set(topo) - TOPO_KEYS:
        raise ConfigError(f"{what}: topo takes wifi_bw, lte_bw (Mbit/s), wifi_loss, lte_loss (%), "
                          "wifi_delay, lte_delay (one way, e.g. '10ms'), nat, timestamps, sack (bool)")
    setup = [parse_event(e, f"{what}: setup[{i}]", False, duration) for i, e in enumerate(data.get("setup", []))]
    events = [parse_event(e, f"{what}: events[{i}]", True, duration) for i, e in enumerate(data.get("events", []))]
    if not events:
        raise ConfigError(f"{what}: no [[events]]")
    events.sort(key=lambda e: e.at)
    expect = data.get("expect", {})
    if not isinstance(expect, dict) or set(expect) - EXPECT_KEYS:
        raise ConfigError(f"{what}: expect takes {', '.join(sorted(EXPECT_KEYS))}")
    new_path = expect.get("new_path")
    if new_path is not None and new_path not in INTERFACES:
        raise ConfigError(f"{what}: expect.new_path must be one of {', '.join(INTERFACES)}")
    sc = Scenario(
        name=str(data.get("name", name)), description=str(data.get("description", "")), duration=duration,
        direction=direction, topo_args=dict(topo), setup=setup, events=events, new_path=new_path, path=path,
    )
    sc.check_delay_lines()
    return sc


def scenario_files(directory: str | os.PathLike = SCENARIO_DIR) -> dict[str, Path]:
    """Shipped scenarios: file stem -> path."""
    d = Path(directory)
    return {p.stem: p for p in sorted(d.glob("*.toml"))} if d.is_dir() else {}


def load_scenario(spec: str | os.PathLike, directory: str | os.PathLike = SCENARIO_DIR) -> Scenario:
    """A scenario by name ('walk-out-of-wifi', looked up in topologies/scenarios/) or by path to a .toml file."""
    path = Path(spec)
    if not path.is_file():
        shipped = scenario_files(directory)
        if str(spec) not in shipped:
            raise ConfigError(f"unknown scenario {str(spec)!r}; shipped: {', '.join(shipped) or 'none'} "
                              "(or give the path of a .toml file)")
        path = shipped[str(spec)]
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, path.stem, str(path))
