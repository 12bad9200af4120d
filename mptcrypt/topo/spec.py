"""From a `Topo` (ours or Mininet's) to a validated build plan. Pure: reads no file, touches no system.

The plan says, for every node, its namespace, interfaces, addresses, routes, shaping, loss rules and
MPTCP settings. `Net` applies it; the tests check it without root. Every option a topology may use is
checked here, so that a typo or an unsupported Mininet option is a `ConfigError` before anything is built.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from mptcrypt.constants import CHAIN_PREFIX, NAME_PREFIX
from mptcrypt.errors import ConfigError

IFNAMSIZ = 15  # longest Linux interface name
POLICY_TABLE_BASE = 100  # per-path routing table of a host's interface = base + its port number
POLICY_RULE_PREF_BASE = 1000  # `ip rule` priority of that table's `from ADDR` rule = base + port
LOSS_CHAIN = CHAIN_PREFIX + "LOSS"  # per-namespace chain holding the statistic-match DROP rules

# MPTCP path-manager endpoint flags (include/uapi/linux/mptcp.h MPTCP_PM_ADDR_FLAG_*)
MPTCP_FLAGS = {"signal": 1, "subflow": 2, "backup": 4, "fullmesh": 8}
MPTCP_LIMIT_KEYS = {"subflows": "subflows", "add_addr_accepted": "add_addr_accepted", "rcv_add_addrs": "add_addr_accepted"}
MPTCP_MAX_LIMIT = 8  # MPTCP_PM_ADDR_MAX in the kernel

# delay, jitter, reorder, duplicate: netem's, or the user-space delay line (mptcrypt.topo.delayline) without it
DELAY_KEYS = frozenset({"delay", "jitter", "reorder", "duplicate"})
SHAPING_KEYS = frozenset({"bw", "loss", "max_queue_size", "use_htb"}) | DELAY_KEYS
DELAY_NS_PREFIX = NAME_PREFIX + "link-"  # namespace of a link's delay line: mptc-link-<node1>-<intf1>
LINK_KEYS = frozenset({"node1", "node2", "port1", "port2", "key", "intfName1", "intfName2", "params1", "params2",
                       "addr1", "addr2", "mtu"}) | SHAPING_KEYS
# Mininet link options that change nothing here (the link class, htb's r2q, tbf being our default).
LINK_IGNORED = frozenset({"cls", "cls1", "cls2", "intf", "fast", "r2q", "use_tbf"})
# Mininet link options with an effect this engine does not reproduce: refused when set.
LINK_REFUSED = frozenset({"enable_ecn", "enable_red", "use_hfsc", "speedup", "latency_ms", "gro", "txo", "rxo"})
INTF_KEYS = frozenset({"ip", "mac", "gw", "ip6", "gw6", "mtu"}) | SHAPING_KEYS
HOST_KEYS = frozenset({"ip", "mac", "defaultRoute", "mptcp", "ipv6", "sysctls", "router", "commands"})
POLICY6_TABLE_BASE = 200  # IPv6 per-path tables (their rules share the IPv4 priorities: another family)
MTU_MIN, MTU_MAX = 1280, 65535  # 1280: the IPv6 minimum (RFC 8200 §5), also the smallest the topologies need
HOST_IGNORED = frozenset({"cls", "inNamespace", "privateDirs"})
SWITCH_KEYS = frozenset({"hub", "isSwitch"})
# Mininet/OVS switch options that mean nothing for a Linux bridge.
SWITCH_IGNORED = frozenset({"cls", "dpid", "failMode", "protocols", "listenPort", "opts", "inband", "datapath",
                            "batch", "prio", "inNamespace", "verbose", "reconnectms"})
MPTCP_KEYS = frozenset({"enabled", "limits", "endpoints", "checksum"})
ENDPOINT_KEYS = frozenset({"addr", "dev", "id", "port", "flags"})

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,%d}$" % IFNAMSIZ)
_SYSCTL_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s)?\s*$")
_TIME_UNIT_US = {"us": 1, "ms": 1000, "s": 1_000_000, None: 1000}  # a bare number is milliseconds, as in Mininet


@dataclass
class Shaping:
    """What happens to the packets one interface sends: rate, delay, loss."""

    bw: float | None = None  # Mbit/s
    delay_us: int = 0
    jitter_us: int = 0
    loss: float = 0.0  # percent
    max_queue_size: int | None = None  # packets
    use_htb: bool = False
    reorder: float = 0.0  # percent of packets sent without the delay (netem's `reorder`)
    duplicate: float = 0.0  # percent of packets sent twice

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_us or self.jitter_us or self.reorder or self.duplicate)


@dataclass
class Intf:
    node: str
    name: str
    port: int
    peer_node: str
    peer_name: str
    addr: ipaddress.IPv4Interface | None = None
    gw: ipaddress.IPv4Address | None = None  # next hop of this interface's per-path default route
    mac: str | None = None
    shaping: Shaping = field(default_factory=Shaping)
    up: bool = True
    addr6: ipaddress.IPv6Interface | None = None  # params 'ip6' (the host needs ipv6=True)
    gw6: ipaddress.IPv6Address | None = None  # next hop of this interface's per-path IPv6 default route
    mtu: int | None = None  # None: the veth default (1500)


@dataclass
class Endpoint:
    """An MPTCP path-manager endpoint (`ip mptcp endpoint add ADDR [id ID] [port P] dev DEV FLAGS`)."""

    addr: str
    dev: str | None
    flags: int
    id: int | None = None
    port: int | None = None


@dataclass
class MptcpSettings:
    enabled: bool = True
    limits: dict[str, int] = field(default_factory=dict)  # pyroute2 keywords: subflows, add_addr_accepted
    endpoints: list[Endpoint] = field(default_factory=list)
    checksum: bool | None = None  # net.mptcp.checksum_enabled


@dataclass
class PolicyTable:
    """Per-path routing of one source address: `ip rule add from SRC table T pref P` and its routes."""

    table: int
    pref: int
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    dev: str
    gw: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def default_dst(self) -> str:
        return "0.0.0.0/0" if self.src.version == 4 else "::/0"


@dataclass
class LossRule:
    """One statistic-match DROP rule: on `intf` of its node, ingress (raw PREROUTING) or egress (mangle
    POSTROUTING, used only when the receiving end is a switch port, which iptables cannot see)."""

    intf: str
    probability: float
    ingress: bool

    @property
    def table(self) -> str:
        return "raw" if self.ingress else "mangle"


@dataclass
class NodePlan:
    name: str
    ns: str
    is_switch: bool
    intfs: list[Intf] = field(default_factory=list)
    hub: bool = False
    default_route: tuple[ipaddress.IPv4Address | None, str] | None = None  # (gateway, device)
    mptcp: MptcpSettings | None = None
    ipv6: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    router: bool = False  # forwards IPv4 (and IPv6 with ipv6=True) between its interfaces
    commands: list[str] = field(default_factory=list)  # shell lines run in the namespace once it is built

    @property
    def bridge(self) -> str:
        return NAME_PREFIX + self.name

    def intf(self, name: str) -> Intf:
        for intf in self.intfs:
            if intf.name == name:
                return intf
        raise ConfigError(f"{self.name} has no interface {name!r}; it has {', '.join(self.intf_names()) or 'none'}")

    def intf_names(self) -> list[str]:
        return [i.name for i in self.intfs]

    def addressed(self) -> list[Intf]:
        return [i for i in self.intfs if i.addr is not None]

    def addressed6(self) -> list[Intf]:
        return [i for i in self.intfs if i.addr6 is not None]

    @property
    def multihomed(self) -> bool:
        return not self.is_switch and len(self.addressed()) >= 2


@dataclass
class LinkPlan:
    node1: str
    intf1: str
    node2: str
    intf2: str
    delayed: bool = False  # asked for delay/jitter/reorder/duplicate (even 0): gets a delay line without netem

    @property
    def delay_ns(self) -> str:
        return f"{DELAY_NS_PREFIX}{self.node1}-{self.intf1}"


@dataclass
class NetPlan:
    nodes: dict[str, NodePlan]
    links: list[LinkPlan]

    @property
    def hosts(self) -> list[NodePlan]:
        return [n for n in self.nodes.values() if not n.is_switch]

    @property
    def switches(self) -> list[NodePlan]:
        return [n for n in self.nodes.values() if n.is_switch]

    def namespaces(self) -> list[str]:
        """Every namespace the network may use: its nodes', and its links' delay lines (made only without netem)."""
        return [n.ns for n in self.nodes.values()] + [lk.delay_ns for lk in self.links if lk.delayed]

    def node(self, name: str) -> NodePlan:
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(f"no node {name!r} in this topology; nodes: {', '.join(self.nodes)}") from None

    def peer(self, intf: Intf) -> Intf:
        return self.nodes[intf.peer_node].intf(intf.peer_name)

    def find_links(self, a: str, b: str, intf: str | None = None) -> list[LinkPlan]:
        """Links between nodes a and b; `intf` (an interface name on either end) picks one of several."""
        self.node(a), self.node(b)
        found = [lk for lk in self.links if {lk.node1, lk.node2} == {a, b} and a != b]
        if intf is not None:
            found = [lk for lk in found if intf in (lk.intf1, lk.intf2)]
        if not found:
            where = f" with interface {intf!r}" if intf else ""
            raise ConfigError(f"no link between {a} and {b}{where}")
        return found


# --- option parsing -----------------------------------------------------------------------------------


def parse_time_us(value: Any, what: str) -> int:
    """'10ms', '500us', '1s' or a number of milliseconds -> microseconds."""
    if value in (None, 0, "", "0"):
        return 0
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a time such as '10ms', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{what}: a time cannot be negative ({value!r})")
        return int(round(value * 1000))
    m = _TIME_RE.match(str(value))
    if not m:
        raise ConfigError(f"{what}: expected a time such as '10ms', '500us' or '1s', got {value!r}")
    return int(round(float(m.group(1)) * _TIME_UNIT_US[m.group(2)]))


def _number(value: Any, what: str, lo: float, hi: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: expected a number, got {value!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
        raise ConfigError(f"{what}: must be {bound}, got {value!r}")
    return float(value)


def apply_shaping(shaping: Shaping, params: dict, where: str) -> Shaping:
    """Update `shaping` with the shaping keys present in `params` (None or 0 clears a setting)."""
    for key in SHAPING_KEYS & params.keys():
        value = params[key]
        if key == "bw":
            shaping.bw = None if value in (None, 0) else _number(value, f"{where}: bw (Mbit/s)", 1e-3, 100_000)
        elif key == "delay":
            shaping.delay_us = parse_time_us(value, f"{where}: delay")
        elif key == "jitter":
            shaping.jitter_us = parse_time_us(value, f"{where}: jitter")
        elif key == "loss":
            shaping.loss = 0.0 if value is None else _number(value, f"{where}: loss (%)", 0, 100)
        elif key == "max_queue_size":
            shaping.max_queue_size = (
                None if value is None else int(_number(value, f"{where}: max_queue_size (packets)", 1, None))
            )
        elif key == "use_htb":
            shaping.use_htb = bool(value)
        elif key in ("reorder", "duplicate"):
            setattr(shaping, key, 0.0 if value is None else _number(value, f"{where}: {key} (%)", 0, 100))
    if shaping.reorder and not shaping.delay_us:
        raise ConfigError(f"{where}: reorder sends some packets without the delay, so it needs a delay (as netem)")
    return shaping


def parse_ipv4_cidr(value: Any, what: str) -> ipaddress.IPv4Interface:
    return _parse_cidr(value, what, 4)


def parse_ipv6_cidr(value: Any, what: str) -> ipaddress.IPv6Interface:
    return _parse_cidr(value, what, 6)


def _parse_cidr(value: Any, what: str, version: int) -> Any:
    text = str(value)
    if "/" not in text:
        raise ConfigError(f"{what}: give the prefix length, e.g. '{text}/{24 if version == 4 else 64}'")
    try:
        addr = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if addr.version != version:
        raise ConfigError(f"{what}: expected an IPv{version} address, got {text!r}")
    return addr


def parse_ipv4(value: Any, what: str) -> ipaddress.IPv4Address:
    addr = parse_ip(value, what)
    if not isinstance(addr, ipaddress.IPv4Address):
        raise ConfigError(f"{what}: only IPv4 is supported, got {value!r}")
    return addr


def parse_ip(value: Any, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of either family (MPTCP endpoints may be IPv6, RFC 8684 §3.4.1)."""
    try:
        return ipaddress.ip_address(str(value))
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def parse_mtu(value: Any, what: str) -> int | None:
    return None if value is None else int(_number(value, f"{what}: mtu", MTU_MIN, MTU_MAX))


def parse_flags(value: Any, what: str) -> int:
    """['subflow', 'backup'], 'subflow,backup', 'subflow|backup' or an int -> MPTCP_PM_ADDR_FLAG bits."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: bad flags {value!r}")
    if isinstance(value, int):
        if value < 0 or value & ~sum(MPTCP_FLAGS.values()):
            raise ConfigError(f"{what}: unknown flag bits in {value:#x}")
        return value
    names = re.split(r"[,|\s]+", value.strip()) if isinstance(value, str) else list(value)
    flags = 0
    for name in names:
        if not name:
            continue
        if name not in MPTCP_FLAGS:
            raise ConfigError(f"{what}: unknown endpoint flag {name!r}; known: {', '.join(MPTCP_FLAGS)}")
        flags |= MPTCP_FLAGS[name]
    return flags


def _check_keys(params: dict, allowed: frozenset, ignored: frozenset, what: str) -> None:
    unknown = set(params) - allowed - ignored
    if unknown:
        raise ConfigError(
            f"{what}: unsupported option(s) {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(sorted(allowed - {'node1', 'node2', 'port1', 'port2', 'key', 'isSwitch'}))}"
        )


def parse_mptcp(value: Any, node: NodePlan) -> MptcpSettings:
    what = f"host {node.name}: mptcp"
    if value in (None, True):
        return MptcpSettings()
    if value is False:
        return MptcpSettings(enabled=False)
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a dict such as {{'enabled': True, 'limits': {{'subflows': 2}}}}")
    _check_keys(value, MPTCP_KEYS, frozenset(), what)
    settings = MptcpSettings(enabled=bool(value.get("enabled", True)))
    if "checksum" in value and value["checksum"] is not None:
        settings.checksum = bool(value["checksum"])
    for key, limit in (value.get("limits") or {}).items():
        if key not in MPTCP_LIMIT_KEYS:
            raise ConfigError(f"{what}: unknown limit {key!r}; known: subflows, add_addr_accepted")
        settings.limits[MPTCP_LIMIT_KEYS[key]] = int(_number(limit, f"{what}: limits.{key}", 0, MPTCP_MAX_LIMIT))
    for i, ep in enumerate(value.get("endpoints") or []):
        settings.endpoints.append(parse_endpoint(ep, node, f"{what}: endpoints[{i}]"))
    return settings


def parse_endpoint(ep: Any, node: NodePlan, what: str) -> Endpoint:
    if not isinstance(ep, dict) or "addr" not in ep:
        raise ConfigError(f"{what}: expected a dict with at least 'addr', e.g. {{'addr': '10.0.2.2', 'flags': ['subflow']}}")
    _check_keys(ep, ENDPOINT_KEYS, frozenset(), what)
    addr = parse_ip(ep["addr"], what)
    dev = ep.get("dev")
    if dev is not None:
        node.intf(dev)
    else:
        owners = [i.name for i in node.intfs if addr in {a.ip for a in (i.addr, i.addr6) if a is not None}]
        if not owners:
            raise ConfigError(f"{what}: {addr} is not an address of {node.name}; give 'dev' or fix the address")
        dev = owners[0]
    ep_id = ep.get("id")
    if ep_id is not None:
        ep_id = int(_number(ep_id, f"{what}: id", 1, 255))
    port = ep.get("port")
    if port is not None:
        port = int(_number(port, f"{what}: port", 1, 65535))
    return Endpoint(addr=str(addr), dev=dev, flags=parse_flags(ep.get("flags", 0), what), id=ep_id, port=port)


def parse_default_route(value: Any, node: NodePlan) -> tuple[ipaddress.IPv4Address | None, str]:
    """Mininet's defaultRoute: 'via GW', 'dev IF', 'via GW dev IF' or just an interface name."""
    what = f"host {node.name}: defaultRoute"
    words = str(value).split()
    if len(words) == 1 and words[0] in node.intf_names():
        words = ["dev", words[0]]
    opts = dict(zip(words[::2], words[1::2]))
    if len(words) % 2 or set(opts) - {"via", "dev"} or not opts:
        raise ConfigError(f"{what}: expected 'via GATEWAY', 'dev INTERFACE' or both, got {value!r}")
    gw = parse_ipv4(opts["via"], what) if "via" in opts else None
    dev = opts.get("dev")
    if dev is not None:
        node.intf(dev)
    else:
        on_link = [i.name for i in node.addressed() if gw in i.addr.network]
        if not on_link:
            raise ConfigError(f"{what}: gateway {gw} is on none of {node.name}'s subnets")
        dev = on_link[0]
    return gw, dev


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{what} name {name!r}: use letters, digits, '-' and '_' only")
    return name


def _check_ifname(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _IFNAME_RE.match(name) or name == "lo":
        raise ConfigError(f"{what}: interface name {name!r} must be 1-{IFNAMSIZ} letters, digits, '-' or '_'")
    return name


# --- the plan -----------------------------------------------------------------------------------------


def plan_topology(topo: Any) -> NetPlan:
    """Check a built `Topo` (this package's or Mininet's) and return what `Net` will create."""
    nodes: dict[str, NodePlan] = {}
    host_opts: dict[str, dict] = {}
    for name in topo.nodes(sort=False):
        _check_name(name, "node")
        opts = dict(topo.nodeInfo(name))
        is_switch = bool(opts.get("isSwitch", False))
        node = NodePlan(name=name, ns=NAME_PREFIX + name, is_switch=is_switch)
        if is_switch:
            _check_keys(opts, SWITCH_KEYS, SWITCH_IGNORED, f"switch {name}")
            if len(node.bridge) > IFNAMSIZ:
                raise ConfigError(f"switch name {name!r} is too long: its bridge {node.bridge!r} exceeds {IFNAMSIZ} characters")
            node.hub = bool(opts.get("hub", False))
        else:
            _check_keys(opts, HOST_KEYS, HOST_IGNORED, f"host {name}")
            node.ipv6 = bool(opts.get("ipv6", False))
            host_opts[name] = opts
        nodes[name] = node
    if not nodes:
        raise ConfigError("the topology has no nodes")

    links: list[LinkPlan] = []
    for n1, n2, info in topo.links(sort=False, withInfo=True):
        what = f"link {n1}<->{n2}"
        for n in (n1, n2):
            if n not in nodes:
                raise ConfigError(f"{what}: {n!r} was never added with addHost or addSwitch")
        if n1 == n2:
            raise ConfigError(f"{what}: a link needs two different nodes")
        _check_keys(info, LINK_KEYS, LINK_IGNORED | LINK_REFUSED, what)
        refused = sorted(k for k in LINK_REFUSED & info.keys() if info[k])
        if refused:
            raise ConfigError(f"{what}: option(s) {', '.join(refused)} are not supported by mptcrypt.topo")
        base = apply_shaping(Shaping(), info, what)
        ends = []
        for side, node_name in ((1, n1), (2, n2)):
            node = nodes[node_name]
            port = info.get(f"port{side}")
            if port is None:
                port = len(node.intfs) + (1 if node.is_switch else 0)
            ifname = info.get(f"intfName{side}") or f"{node_name}-eth{port}"
            _check_ifname(ifname, f"{what}, end {node_name}")
            if ifname in node.intf_names():
                raise ConfigError(f"{what}: {node_name} already has an interface {ifname!r}")
            params = info.get(f"params{side}") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{what}: params{side} must be a dict such as {{'ip': '10.0.1.2/24'}}")
            _check_keys(params, INTF_KEYS, frozenset(), f"{what}, params{side}")
            shaping = apply_shaping(Shaping(**vars(base)), params, f"{what}, params{side}")
            intf = Intf(node=node_name, name=ifname, port=int(port), peer_node="", peer_name="", shaping=shaping)
            if "ip" in params and params["ip"] is not None:
                if node.is_switch:
                    raise ConfigError(f"{what}: switch port {ifname} cannot have an IP address")
                intf.addr = parse_ipv4_cidr(params["ip"], f"{what}, {ifname}")
            intf.mac = params.get("mac") or info.get(f"addr{side}")
            if params.get("gw") is not None:
                intf.gw = parse_ipv4(params["gw"], f"{what}, {ifname}: gw")
            if params.get("ip6") is not None:
                if node.is_switch:
                    raise ConfigError(f"{what}: switch port {ifname} cannot have an IP address")
                intf.addr6 = parse_ipv6_cidr(params["ip6"], f"{what}, {ifname}: ip6")
            if params.get("gw6") is not None:
                gw6 = parse_ip(params["gw6"], f"{what}, {ifname}: gw6")
                if gw6.version != 6:
                    raise ConfigError(f"{what}, {ifname}: gw6 must be an IPv6 address, got {gw6}")
                intf.gw6 = gw6
            intf.mtu = parse_mtu(params.get("mtu", info.get("mtu")), f"{what}, {ifname}")
            node.intfs.append(intf)
            ends.append(intf)
        a, b = ends
        a.peer_node, a.peer_name, b.peer_node, b.peer_name = b.node, b.name, a.node, a.name
        delayed = any(DELAY_KEYS & set(d) for d in (info, info.get("params1") or {}, info.get("params2") or {}))
        links.append(LinkPlan(a.node, a.name, b.node, b.name, delayed=delayed))

    for name, opts in host_opts.items():
        node = nodes[name]
        node.intfs.sort(key=lambda i: i.port)
        if opts.get("ip") and node.intfs and node.intfs[0].addr is None:
            node.intfs[0].addr = parse_ipv4_cidr(opts["ip"], f"host {name}: ip")
        if opts.get("mac") and node.intfs and node.intfs[0].mac is None:
            node.intfs[0].mac = opts["mac"]
        for intf in node.intfs:
            if intf.gw is not None and (intf.addr is None or intf.gw not in intf.addr.network):
                raise ConfigError(f"host {name}: gw {intf.gw} of {intf.name} is not in {intf.name}'s subnet")
            if intf.gw6 is not None and (intf.addr6 is None or intf.gw6 not in intf.addr6.network):
                raise ConfigError(f"host {name}: gw6 {intf.gw6} of {intf.name} is not in {intf.name}'s subnet")
            if intf.addr6 is not None and not node.ipv6:
                raise ConfigError(f"host {name}: {intf.name} has an ip6 address: add ipv6=True to the host")
        if opts.get("defaultRoute"):
            node.default_route = parse_default_route(opts["defaultRoute"], node)
        node.mptcp = parse_mptcp(opts.get("mptcp"), node)
        sysctls = opts.get("sysctls") or {}
        if not isinstance(sysctls, dict):
            raise ConfigError(f"host {name}: sysctls must be a dict such as {{'net.ipv4.tcp_timestamps': 0}}")
        for key, value in sysctls.items():
            if not _SYSCTL_KEY_RE.match(str(key)) or ".." in str(key):
                raise ConfigError(f"host {name}: bad sysctl name {key!r}")
            node.sysctls[str(key)] = str(int(value) if isinstance(value, bool) else value)
        node.router = bool(opts.get("router", False))
        commands = opts.get("commands") or []
        if isinstance(commands, str) or not all(isinstance(c, str) for c in commands):
            raise ConfigError(f"host {name}: commands must be a list of shell lines, e.g. ['iptables -t nat ...']")
        node.commands = list(commands)
    for node in nodes.values():
        node.intfs.sort(key=lambda i: i.port)
        ports = [i.port for i in node.intfs]
        if len(set(ports)) != len(ports):
            raise ConfigError(f"{node.name}: two links use the same port number")
    plan = NetPlan(nodes=nodes, links=links)
    clash = {n.ns for n in nodes.values()} & {lk.delay_ns for lk in links if lk.delayed}
    if clash:
        raise ConfigError(f"node name(s) {', '.join(sorted(clash))} clash with a link's delay-line namespace: rename")
    loss_rules(plan)  # refuses loss that cannot be placed
    return plan


# --- derived configuration ------------------------------------------------------------------------------


def policy_tables(node: NodePlan) -> list[PolicyTable]:
    """Per-path routing of a multihomed host: one table per addressed interface, chosen by source address.

    The table holds the interface's subnet and, when the interface has a `gw`, a default route through it,
    so that traffic from that address to any other network leaves by its own link. Traffic to a
    destination the table does not cover falls through to the main table (destination routing), which is
    what lets a server answer a subflow on the link it arrived on.
    """
    tables = []
    if node.multihomed:
        for intf in node.addressed():
            tables.append(
                PolicyTable(
                    table=POLICY_TABLE_BASE + intf.port,
                    pref=POLICY_RULE_PREF_BASE + intf.port,
                    src=intf.addr.ip,
                    subnet=intf.addr.network,
                    dev=intf.name,
                    gw=intf.gw,
                )
            )
    if not node.is_switch and len(node.addressed6()) >= 2:  # the same per path for IPv6 addresses
        for intf in node.addressed6():
            tables.append(PolicyTable(table=POLICY6_TABLE_BASE + intf.port, pref=POLICY_RULE_PREF_BASE + intf.port,
                                      src=intf.addr6.ip, subnet=intf.addr6.network, dev=intf.name, gw=intf.gw6))
    return tables


def loss_rules(plan: NetPlan) -> dict[str, list[LossRule]]:
    """Where each interface's `loss` is enforced: on the receiver's ingress when the receiver is a host,
    else on the sender's egress. Returns node name -> rules (only nodes with rules)."""
    rules: dict[str, list[LossRule]] = {}
    for node in plan.nodes.values():
        for intf in node.intfs:
            if not intf.shaping.loss:
                continue
            peer = plan.peer(intf)
            prob = intf.shaping.loss / 100.0
            if not plan.nodes[peer.node].is_switch:
                rules.setdefault(peer.node, []).append(LossRule(peer.name, prob, ingress=True))
            elif not node.is_switch:
                rules.setdefault(node.name, []).append(LossRule(intf.name, prob, ingress=False))
            else:
                raise ConfigError(
                    f"loss on the switch-to-switch link {node.name}<->{peer.node} is not supported: "
                    "put it on a link with a host at one end"
                )
    return rules


def loss_script(rules: list[LossRule], ipv6: bool = False) -> str:
    """Shell commands that make the node's MPTC-LOSS chains hold exactly `rules` (run in its namespace).

    Both chains (raw for ingress, mangle for egress) are rewritten: an emptied chain stays, empty,
    jumped to from its hook, so that a later `set_link` finds it.
    """
    tools = ["iptables"] + (["ip6tables"] if ipv6 else [])
    hooks = {"raw": "PREROUTING", "mangle": "POSTROUTING"}
    lines = ["set -e"]
    for tool in tools:
        for table, hook in hooks.items():
            mine = [r for r in rules if r.table == table]
            if not mine:
                lines.append(f"{tool} -t {table} -F {LOSS_CHAIN} 2>/dev/null || true")
                continue
            lines.append(f"{tool} -t {table} -N {LOSS_CHAIN} 2>/dev/null || {tool} -t {table} -F {LOSS_CHAIN}")
            lines.append(
                f"{tool} -t {table} -C {hook} -j {LOSS_CHAIN} 2>/dev/null || {tool} -t {table} -I {hook} 1 -j {LOSS_CHAIN}"
            )
            for r in mine:
                direction = "-i" if r.ingress else "-o"
                lines.append(
                    f"{tool} -t {table} -A {LOSS_CHAIN} {direction} {shlex.quote(r.intf)} "
                    f"-m statistic --mode random --probability {r.probability:.6f} -j DROP"
                )
    return "\n".join(lines) + "\n"


def sysctl_script(values: dict[str, str]) -> str:
    """Shell commands writing /proc/sys directly (no dependency on procps' sysctl)."""
    lines = ["set -e"]
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key
        lines.append(f"printf '%s\\n' {shlex.quote(str(value))} > {shlex.quote(path)}")
    return "\n".join(lines) + "\n"


def early_sysctls(node: NodePlan) -> dict[str, str]:
    """Sysctls set before any interface exists (defaults that new interfaces inherit)."""
    values: dict[str, str] = {}
    if not node.ipv6:
        # No IPv6 link-local chatter (router solicitations, DAD) in captures of the emulated links.
        values["net.ipv6.conf.all.disable_ipv6"] = "1"
        values["net.ipv6.conf.default.disable_ipv6"] = "1"
    elif not node.is_switch:
        # Addresses usable at once (no duplicate address detection: the links are ours), no router adverts.
        values["net.ipv6.conf.all.accept_dad"] = values["net.ipv6.conf.default.accept_dad"] = "0"
        values["net.ipv6.conf.all.accept_ra"] = values["net.ipv6.conf.default.accept_ra"] = "0"
    if node.router:
        values["net.ipv4.ip_forward"] = "1"
        if node.ipv6:
            values["net.ipv6.conf.all.forwarding"] = "1"
    if node.mptcp is not None:
        values["net.mptcp.enabled"] = "1" if node.mptcp.enabled else "0"
        if node.mptcp.checksum is not None:
            values["net.mptcp.checksum_enabled"] = "1" if node.mptcp.checksum else "0"
    return values
