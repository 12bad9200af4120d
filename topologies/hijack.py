"""Client and server over two paths, with an attacker on path 1.

    client c-eth0 10.0.1.2/24 --+
                                |
    attacker a-eth0 10.0.1.66/24+-- hub (Linux bridge, no learning: every port sees every frame)
                                |
    server s-eth0 10.0.1.1/24 --+
    client c-eth1 10.0.2.2/24 -------- path 2, direct -------- 10.0.2.1/24 s-eth1 server

The attacker sees every packet of path 1 (capture on a-eth0) and can inject into it from 10.0.1.66
or spoofing the client's address; path 2 is out of its reach. MPTCP as in two_path: the client's
10.0.2.2 is a `subflow` endpoint; the attacker has MPTCP on too, to try joins of its own.

Build argument `ipv6=True` (`--topo hijack,ipv6=True`; the attack suite's IPv6 rows, issue 12 item 4): the same
layout, every interface also gets a ULA address, fd00:1::2 / fd00:1::66 / fd00:1::1 on path 1 and fd00:2::2 /
fd00:2::1 on path 2 (`V6` below), and the client's MPTCP `subflow` endpoint is fd00:2::2 instead of 10.0.2.2 (an
IPv6 connection joins only from an IPv6 address).
"""

try:
    from mininet.topo import Topo
except ImportError:
    from mptcrypt.topo import Topo

MPTCP_LIMITS = {"subflows": 2, "add_addr_accepted": 2}
# interface -> its IPv6 address with ipv6=True (the IPv4 layout's host numbers on fd00:PATH::/64)
V6 = {"c-eth0": "fd00:1::2", "s-eth0": "fd00:1::1", "a-eth0": "fd00:1::66", "c-eth1": "fd00:2::2",
      "s-eth1": "fd00:2::1"}


class HijackTopo(Topo):
    def build(self, ipv6=False):
        ipv6 = str(ipv6).lower() in ("1", "true", "yes") if not isinstance(ipv6, bool) else ipv6

        def six(intf, gw=None):
            if not ipv6:
                return {}
            return {"ip6": f"{V6[intf]}/64", **({"gw6": V6[gw]} if gw else {})}

        endpoint = V6["c-eth1"] if ipv6 else "10.0.2.2"
        client = self.addHost(
            "client",
            ipv6=ipv6,
            mptcp={
                "enabled": True,
                "limits": MPTCP_LIMITS,
                "endpoints": [{"addr": endpoint, "dev": "c-eth1", "flags": ["subflow"]}],
            },
        )
        server = self.addHost("server", ipv6=ipv6, mptcp={"enabled": True, "limits": MPTCP_LIMITS})
        attacker = self.addHost("attacker", ipv6=ipv6, mptcp={"enabled": True, "limits": MPTCP_LIMITS})
        # dpid: Mininet derives datapath ids from names like s1; "hub" needs one given.
        hub = self.addSwitch("hub", hub=True, dpid="1")
        self.addLink(client, hub, intfName1="c-eth0", intfName2="hub-c",
                     params1={"ip": "10.0.1.2/24", "gw": "10.0.1.1", **six("c-eth0", "s-eth0")})
        self.addLink(server, hub, intfName1="s-eth0", intfName2="hub-s",
                     params1={"ip": "10.0.1.1/24", **six("s-eth0")})
        self.addLink(attacker, hub, intfName1="a-eth0", intfName2="hub-a",
                     params1={"ip": "10.0.1.66/24", **six("a-eth0")})
        self.addLink(
            client, server, intfName1="c-eth1", intfName2="s-eth1",
            params1={"ip": "10.0.2.2/24", "gw": "10.0.2.1", **six("c-eth1", "s-eth1")},
            params2={"ip": "10.0.2.1/24", **six("s-eth1")},
        )


topos = {"hijack": HijackTopo}
