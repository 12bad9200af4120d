"""Two hosts joined by two disjoint links: the smallest multipath network.

    client c-eth0 10.0.1.2/24 ----- path 1 ----- 10.0.1.1/24 s-eth0 server
    client c-eth1 10.0.2.2/24 ----- path 2 ----- 10.0.2.1/24 s-eth1 server

MPTCP is on in both hosts (limits: 2 subflows, 2 accepted ADD_ADDRs); the client's endpoint 10.0.2.2
is a `subflow` endpoint, so an MPTCP connection from the client to 10.0.1.1 opens a second subflow
10.0.2.2 -> 10.0.1.1 that leaves by c-eth1 (per-path routing, gateway 10.0.2.1) and comes back on the
same link.

    mptcrypt topo up topologies/two_path.py            # or: mn --custom topologies/two_path.py --topo two_path
"""

try:
    from mininet.topo import Topo
except ImportError:
    from mptcrypt.topo import Topo

MPTCP_LIMITS = {"subflows": 2, "add_addr_accepted": 2}


class TwoPathTopo(Topo):
    def build(self, bw1=None, bw2=None, loss1=0, loss2=0, delay1=None, delay2=None):
        client = self.addHost(
            "client",
            mptcp={
                "enabled": True,
                "limits": MPTCP_LIMITS,
                "endpoints": [{"addr": "10.0.2.2", "dev": "c-eth1", "flags": ["subflow"]}],
            },
        )
        server = self.addHost("server", mptcp={"enabled": True, "limits": MPTCP_LIMITS})
        self.addLink(
            client, server, intfName1="c-eth0", intfName2="s-eth0",
            params1={"ip": "10.0.1.2/24", "gw": "10.0.1.1"}, params2={"ip": "10.0.1.1/24"},
            bw=bw1, loss=loss1, **_delay(delay1),
        )
        self.addLink(
            client, server, intfName1="c-eth1", intfName2="s-eth1",
            params1={"ip": "10.0.2.2/24", "gw": "10.0.2.1"}, params2={"ip": "10.0.2.1/24"},
            bw=bw2, loss=loss2, **_delay(delay2),
        )


def _delay(value):
    """delay1/delay2 (one way, each direction, e.g. '20ms'): None builds the link without a delay line."""
    return {} if value is None else {"delay": value}


topos = {"two_path": TwoPathTopo}
