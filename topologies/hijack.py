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
"""

try:
    from mininet.topo import Topo
except ImportError:
    from mptcrypt.topo import Topo

MPTCP_LIMITS = {"subflows": 2, "add_addr_accepted": 2}


class HijackTopo(Topo):
    def build(self):
        client = self.addHost(
            "client",
            mptcp={
                "enabled": True,
                "limits": MPTCP_LIMITS,
                "endpoints": [{"addr": "10.0.2.2", "dev": "c-eth1", "flags": ["subflow"]}],
            },
        )
        server = self.addHost("server", mptcp={"enabled": True, "limits": MPTCP_LIMITS})
        attacker = self.addHost("attacker", mptcp={"enabled": True, "limits": MPTCP_LIMITS})
        # dpid: Mininet derives datapath ids from names like s1; "hub" needs one given.
        hub = self.addSwitch("hub", hub=True, dpid="1")
        self.addLink(client, hub, intfName1="c-eth0", intfName2="hub-c",
                     params1={"ip": "10.0.1.2/24", "gw": "10.0.1.1"})
        self.addLink(server, hub, intfName1="s-eth0", intfName2="hub-s", params1={"ip": "10.0.1.1/24"})
        self.addLink(attacker, hub, intfName1="a-eth0", intfName2="hub-a", params1={"ip": "10.0.1.66/24"})
        self.addLink(
            client, server, intfName1="c-eth1", intfName2="s-eth1",
            params1={"ip": "10.0.2.2/24", "gw": "10.0.2.1"}, params2={"ip": "10.0.2.1/24"},
        )


topos = {"hijack": HijackTopo}
