"""Two sites, each behind an mptcrypt gateway, two paths between the gateways; the hosts stay unmodified.

    site A                          path 1 10.1.1.0/24                          site B
    hostA a-eth0 192.168.10.2 --+   ga-wan1 .1 ------------------- .2 gb-wan1   +-- gb-lan 192.168.20.1
                                gwA                                         gwB     |
    hostA a-eth1 192.168.11.2 --+   ga-wan2 .1 ------------------- .2 gb-wan2       hostB b-eth0 192.168.20.2
                                    path 2 10.1.2.0/24

gwA is multihomed: what comes from 192.168.10.0/24 leaves by path 1, what comes from 192.168.11.0/24 by path 2
(a rule `from 192.168.11.0/24` and its own table), so an MPTCP connection of hostA (its 192.168.11.2 is a `subflow`
endpoint) has one subflow per path; gwB routes each of site A's networks back by the path it came from.

Run `mptcrypt daemon --gateway --lan 192.168.10.0/24 --lan 192.168.11.0/24` on gwA and
`mptcrypt daemon --gateway --lan 192.168.20.0/24` on gwB; the hosts run nothing.

Build arguments: `nat=True` makes gwA also site A's NAT (`MASQUERADE --random-fully` on both WAN links: gwB then
sees 10.1.1.1 / 10.1.2.1 as the peers).
"""

try:
    from mininet.topo import Topo
except ImportError:
    from mptcrypt.topo import Topo

MPTCP_LIMITS = {"subflows": 2, "add_addr_accepted": 2}
LANS_A = ("192.168.10.0/24", "192.168.11.0/24")
LANS_B = ("192.168.20.0/24",)
PATH2_TABLE = 50  # gwA's table for what site A's second network sends


class GatewaysTopo(Topo):
    def build(self, nat=False):
        nat = str(nat).lower() in ("1", "true", "yes") if not isinstance(nat, bool) else nat
        host_a = self.addHost("hostA", defaultRoute="via 192.168.10.1", mptcp={
            "enabled": True, "limits": MPTCP_LIMITS,
            "endpoints": [{"addr": "192.168.11.2", "dev": "a-eth1", "flags": ["subflow"]}]})
        host_b = self.addHost("hostB", defaultRoute="via 192.168.20.1", mptcp={"enabled": True,
                                                                              "limits": MPTCP_LIMITS})
        gw_a_cmds = [
            "ip route add 192.168.20.0/24 via 10.1.1.2",
            f"ip rule add from 192.168.11.0/24 table {PATH2_TABLE} pref 500",
            f"ip route add 192.168.20.0/24 via 10.1.2.2 table {PATH2_TABLE}",
        ]
        if nat:
            gw_a_cmds += [f"iptables -t nat -A POSTROUTING -o {wan} -j MASQUERADE --random-fully"
                          for wan in ("ga-wan1", "ga-wan2")]
        gw_a = self.addHost("gwA", router=True, commands=gw_a_cmds)
        gw_b = self.addHost("gwB", router=True, commands=["ip route add 192.168.10.0/24 via 10.1.1.1",
                                                          "ip route add 192.168.11.0/24 via 10.1.2.1"])
        for i in (0, 1):
            self.addLink(host_a, gw_a, intfName1=f"a-eth{i}", intfName2=f"ga-lan{i}",
                         params1={"ip": f"192.168.1{i}.2/24", "gw": f"192.168.1{i}.1"},
                         params2={"ip": f"192.168.1{i}.1/24"})
        for path in (1, 2):
            self.addLink(gw_a, gw_b, intfName1=f"ga-wan{path}", intfName2=f"gb-wan{path}",
                         params1={"ip": f"10.1.{path}.1/24"}, params2={"ip": f"10.1.{path}.2/24"})
        self.addLink(gw_b, host_b, intfName1="gb-lan", intfName2="b-eth0",
                     params1={"ip": "192.168.20.1/24"}, params2={"ip": "192.168.20.2/24"})


topos = {"gateways": GatewaysTopo}
