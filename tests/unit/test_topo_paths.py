"""Topology plans for real paths (issue 13): routers, per-host commands, MTU per link, IPv6 addressing. Pure plans,
no root; tests/integration/test_paths_*.py build them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mptcrypt.errors import ConfigError
from mptcrypt.topo import Topo, load_topo, plan_topology
from mptcrypt.topo.spec import early_sysctls, policy_tables

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def _pair(**params):
    t = Topo()
    a = t.addHost("a", **params.pop("host", {}))
    b = t.addHost("b")
    t.addLink(a, b, **params)
    return t


def test_router_forwards_and_runs_its_commands_last():
    topo, *_ = load_topo(str(TOPOLOGIES / "nat.py"), "nat,nat=1")
    plan = plan_topology(topo)
    nat1, nat2 = plan.node("nat1"), plan.node("nat2")
    assert early_sysctls(nat1)["net.ipv4.ip_forward"] == "1"
    assert nat1.commands == ["iptables -t nat -A POSTROUTING -o wan1 -j MASQUERADE --random-fully"]
    assert nat2.commands == []  # nat=1: path 2 is only routed
    assert "net.ipv4.ip_forward" not in early_sysctls(plan.node("client"))


def test_double_nat_puts_the_mtu_on_the_link_no_end_host_touches():
    topo, *_ = load_topo(str(TOPOLOGIES / "nat.py"), "nat,double=True,mtu1=1280")
    plan = plan_topology(topo)
    mtus = {(n.name, i.name): i.mtu for n in plan.hosts for i in n.intfs if i.mtu}
    assert mtus == {("home1", "h-wan"): 1280, ("nat1", "cgn-lan"): 1280}


def test_ipv6_addresses_gateways_and_per_path_tables():
    topo, *_ = load_topo(str(TOPOLOGIES / "nat.py"), "nat,ipv6=True")
    client = plan_topology(topo).node("client")
    assert [str(i.addr6) for i in client.intfs] == ["fd00:11::2/64", "fd00:12::2/64"]
    tables = {pt.table: pt for pt in policy_tables(client)}
    assert set(tables) == {100, 101, 200, 201}
    assert tables[201].src == ipaddress.ip_address("fd00:12::2") and tables[201].default_dst == "::/0"
    assert tables[201].gw == ipaddress.ip_address("fd00:12::1")
    assert early_sysctls(client)["net.ipv6.conf.all.accept_dad"] == "0"
    nat2 = plan_topology(topo).node("nat2")  # a join from path 2 to the server's path-1 address must be routed
    assert str(nat2.intf("wan2").gw6) == "fd00:2::1"


def test_ipv6_endpoint_is_accepted():
    t = Topo()
    a = t.addHost("a", ipv6=True, mptcp={"endpoints": [{"addr": "fd00:2::2", "flags": "signal"}]})
    t.addLink(a, t.addHost("b"), params1={"ip6": "fd00:2::2/64"})
    ep = plan_topology(t).node("a").mptcp.endpoints[0]
    assert (ep.addr, ep.dev, ep.flags) == ("fd00:2::2", "a-eth0", 1)


@pytest.mark.parametrize("params, message", [
    ({"params1": {"ip6": "fd00::1/64"}}, "ipv6=True"),
    ({"host": {"ipv6": True}, "params1": {"ip6": "fd00::1"}}, "prefix length"),
    ({"host": {"ipv6": True}, "params1": {"ip6": "10.0.0.1/24"}}, "IPv6"),
    ({"host": {"ipv6": True}, "params1": {"ip6": "fd00::1/64", "gw6": "fd01::1"}}, "not in"),
    ({"mtu": 500}, "mtu"),
    ({"host": {"commands": "iptables -L"}}, "list of shell lines"),
])
def test_bad_path_options_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        plan_topology(_pair(**params))
