"""A client behind NAT routers, one per path, the way a phone is (home router on Wi-Fi, carrier NAT on LTE).

    client c-eth0 192.168.1.2 -- lan1 [nat1] wan1 10.0.1.254 ------------------------- 10.0.1.1 s-eth0 server
    client c-eth1 192.168.2.2 -- lan2 [nat2] wan2 10.0.2.254 ------------------------- 10.0.2.1 s-eth1 server

    double=True, path 1 through a home router and a carrier NAT:
    client c-eth0 192.168.1.2 -- [home1] 100.64.1.2 -- 100.64.1.1 [nat1] 10.0.1.254 -- 10.0.1.1 s-eth0 server

Each router forwards (`router=True`) and, on the paths given by `nat`, rewrites addresses AND ports of everything
leaving its WAN side: `iptables -t nat -A POSTROUTING -o WAN -j MASQUERADE --random-fully` (as carrier-grade NAT
does; plain MASQUERADE keeps the port when it can, which hides port-binding bugs). The server has routes back to
the private networks, so a path without NAT is simply routed. The server sees the NATs' addresses as its peers.

Build arguments (`--topo nat,nat=1,double=True`):
- `nat`: which paths NAT: "both" (default), "1", "2" or "none".
- `double`: path 1 crosses two NATs (home1 then nat1).
- `mtu1`: MTU of path 1's middle link (home1 <-> nat1 with double=True, else nat1 <-> server): with double=True
  neither end host is on that link, so only Path MTU Discovery (ICMP "fragmentation needed") finds it.
- `ipv6`: every host also gets IPv6 (fd00:1::/64 ... on the same links, routed; IPv6 has no NAT here).
- `mptcp_ep`: the client's second path is an MPTCP `subflow` endpoint (default True; with ipv6 its IPv6 address too).
- `signal6`: the server announces fd00:2::1 (an MPTCP `signal` endpoint: ADD_ADDR with an IPv6 address), so an
  IPv4 connection gets an IPv6 subflow.
- `strip`: nat1 is also a middlebox stripping option 253 from "syn" segments (SYN and SYN-ACK), "data" (every
  segment without SYN), "all", or "none" (default): `iptables -t mangle -A FORWARD -p tcp [--tcp-flags SYN SYN|NONE]
  -j TCPOPTSTRIP --strip-options 253`.

MPTCP: the client's 192.168.2.2 is a `subflow` endpoint, so a connection to 10.0.1.1 also joins 192.168.2.2 ->
10.0.1.1 through nat2 (per-path routing on the client; the server answers via its main table).
"""

try:
    from mininet.topo import Topo
except ImportError:
    from mptcrypt.topo import Topo

MPTCP_LIMITS = {"subflows": 2, "add_addr_accepted": 2}
NAT_RULE = "iptables -t nat -A POSTROUTING -o {wan} -j MASQUERADE --random-fully"
NATS = {"both": (1, 2), "1": (1,), "2": (2,), "none": ()}
# A middlebox that strips the RFC 6994 option mptcrypt rides in (kind 253), from SYNs (and SYN-ACKs), from every
# other segment, or from all; xt_TCPOPTSTRIP in the mangle table of nat1's FORWARD chain.
STRIP_RULE = "iptables -t mangle -A FORWARD -p tcp{flags} -j TCPOPTSTRIP --strip-options 253"
STRIP_FLAGS = {"none": None, "syn": " --tcp-flags SYN SYN", "data": " --tcp-flags SYN NONE", "all": ""}


def v6(net: int, host: int) -> str:
    return f"fd00:{net}::{host}"


class NatTopo(Topo):
    def build(self, nat="both", double=False, mtu1=None, ipv6=False, mptcp_ep=True, strip="none", signal6=False):
        nat, strip = str(nat), str(strip)
        if nat not in NATS:
            raise ValueError(f"nat={nat!r}: use one of {', '.join(NATS)}")
        if strip not in STRIP_FLAGS:
            raise ValueError(f"strip={strip!r}: use one of {', '.join(STRIP_FLAGS)}")
        nat_paths = NATS[nat]
        double = str(double).lower() in ("1", "true", "yes") if not isinstance(double, bool) else double
        ipv6 = str(ipv6).lower() in ("1", "true", "yes") if not isinstance(ipv6, bool) else ipv6
        mtu1 = int(mtu1) if mtu1 not in (None, "", "None") else None
        endpoints = [{"addr": "192.168.2.2", "dev": "c-eth1", "flags": ["subflow"]}] if mptcp_ep else []
        if mptcp_ep and ipv6:
            endpoints.append({"addr": v6(12, 2), "dev": "c-eth1", "flags": ["subflow"]})
        signal6 = str(signal6).lower() in ("1", "true", "yes") if not isinstance(signal6, bool) else signal6
        client = self.addHost("client", ipv6=ipv6, defaultRoute="via 192.168.1.1", mptcp={"enabled": True, "limits": MPTCP_LIMITS,
                                                           "endpoints": endpoints})
        server_routes = []
        for path in (1, 2):
            server_routes.append(f"ip route add 192.168.{path}.0/24 via 10.0.{path}.254")
            if ipv6:
                server_routes.append(f"ip -6 route add {v6(path + 10, 0)}/64 via {v6(path, 254)}")
        server_eps = [{"addr": v6(2, 1), "dev": "s-eth1", "flags": ["signal"]}] if ipv6 and signal6 else []
        server = self.addHost("server", ipv6=ipv6, commands=server_routes,
                              mptcp={"enabled": True, "limits": MPTCP_LIMITS, "endpoints": server_eps})

        def six(net, host, gw=None):
            if not ipv6:
                return {}
            return {"ip6": f"{v6(net, host)}/64", **({"gw6": v6(net, gw)} if gw is not None else {})}

        for path in (1, 2):
            lan, wan = f"lan{path}", f"wan{path}"
            commands = [NAT_RULE.format(wan=wan)] if path in nat_paths else []
            if path == 1 and STRIP_FLAGS[strip] is not None:
                commands.append(STRIP_RULE.format(flags=STRIP_FLAGS[strip]))
            if path == 1 and double:  # the carrier NAT reaches the home network through the home router
                commands.append("ip route add 192.168.1.0/24 via 100.64.1.2")
                if ipv6:
                    commands.append(f"ip -6 route add {v6(11, 0)}/64 via {v6(21, 2)}")
            # default route toward the server: a join from this path may go to the server's other address
            router = self.addHost(f"nat{path}", router=True, ipv6=ipv6, commands=commands,
                                  defaultRoute=f"via 10.0.{path}.1")
            self.addLink(router, server, intfName1=wan, intfName2=f"s-eth{path - 1}",
                         params1={"ip": f"10.0.{path}.254/24", **six(path, 254, 1)},
                         params2={"ip": f"10.0.{path}.1/24", **six(path, 1)},
                         mtu=mtu1 if path == 1 and not double else None)
            first = router
            if path == 1 and double:
                first = self.addHost("home1", router=True, ipv6=ipv6, commands=[NAT_RULE.format(wan="h-wan")] if 1 in nat_paths else [],
                                     defaultRoute="via 100.64.1.1")
                self.addLink(first, router, intfName1="h-wan", intfName2="cgn-lan", mtu=mtu1,
                             params1={"ip": "100.64.1.2/24", **six(21, 2, 1)},
                             params2={"ip": "100.64.1.1/24", **six(21, 1)})
            self.addLink(first, client, intfName1=lan, intfName2=f"c-eth{path - 1}",
                         params1={"ip": f"192.168.{path}.1/24", **six(path + 10, 1)},
                         params2={"ip": f"192.168.{path}.2/24", "gw": f"192.168.{path}.1",
                                  **six(path + 10, 2, 1)})


topos = {"nat": NatTopo}
