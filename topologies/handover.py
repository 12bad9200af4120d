"""A mobile with Wi-Fi and LTE, and a server: for handover between networks.

    mobile wifi 10.0.1.2/24 ---- Wi-Fi, 50 Mbit/s, 10 ms ---- 10.0.1.1/24 s-wifi server
    mobile lte  10.0.2.2/24 ---- LTE,   20 Mbit/s, 40 ms ---- 10.0.2.1/24 s-lte  server

The mobile's default route is Wi-Fi; each of its addresses leaves by its own link (per-path routing).
Both mobile addresses are MPTCP `subflow` endpoints, so a connection uses both networks. A handover
script changes the networks at run time through `Net`: `net.link_down('mobile', 'server', intf='wifi')`,
`net.set_link('mobile', 'server', intf='lte', bw=5, loss=2)`, or `net.set_addr('mobile', 'wifi',
'10.0.1.77/24')` for a new address on the same network (the endpoint follows the address).

Build arguments (`--topo handover,30,10` or `handover,wifi_bw=30`): wifi_bw, lte_bw (Mbit/s),
wifi_loss, lte_loss (%), wifi_delay, lte_delay (one way, each direction: Wi-Fi ~10 ms and LTE ~40 ms
by default, so a round trip takes ~20 / ~80 ms as on real networks; `None` or "none" builds the link without
a delay line, microseconds of RTT), nat: both networks rewrite the mobile's source ports as a carrier NAT does
(`MASQUERADE --random-fully` on wifi and lte, in the mobile's namespace after its daemon's OUTPUT hook: the daemon
and the server see different ports, as across a NAT router; addresses stay, so the link events work unchanged),
timestamps / sack (default true): false turns TCP timestamps (SACK) off in both kernels, so plain MPTCP runs with
the option set mptcrypt leaves its kernels (no timestamps: their bytes go to the MAC): a control experiment.
"""

try:
    from mininet.topo import Topo
except ImportError:
    from mptcrypt.topo import Topo

MPTCP_LIMITS = {"subflows": 2, "add_addr_accepted": 2}


class HandoverTopo(Topo):
    def build(self, wifi_bw=50, lte_bw=20, wifi_loss=0, lte_loss=0, wifi_delay="10ms", lte_delay="40ms", nat=False,
              timestamps=True, sack=True):
        nat, timestamps, sack = (_flag(v) for v in (nat, timestamps, sack))
        # both hosts' kernels, for plain MPTCP with mptcrypt's option set (no TCP timestamps, or no SACK either)
        sysctls = {**({} if timestamps else {"net.ipv4.tcp_timestamps": 0}), **({} if sack else {"net.ipv4.tcp_sack": 0})}
        mobile = self.addHost(
            "mobile",
            commands=[f"iptables -t nat -A POSTROUTING -o {dev} -j MASQUERADE --random-fully"
                      for dev in ("wifi", "lte")] if nat else [],
            defaultRoute="via 10.0.1.1 dev wifi",
            sysctls=sysctls,
            mptcp={
                "enabled": True,
                "limits": MPTCP_LIMITS,
                "endpoints": [
                    {"addr": "10.0.1.2", "dev": "wifi", "flags": ["subflow"]},
                    {"addr": "10.0.2.2", "dev": "lte", "flags": ["subflow"]},
                ],
            },
        )
        server = self.addHost("server", sysctls=sysctls, mptcp={"enabled": True, "limits": MPTCP_LIMITS})
        self.addLink(
            mobile, server, intfName1="wifi", intfName2="s-wifi",
            params1={"ip": "10.0.1.2/24", "gw": "10.0.1.1"}, params2={"ip": "10.0.1.1/24"},
            bw=wifi_bw, loss=wifi_loss, **_delay(wifi_delay),
        )
        self.addLink(
            mobile, server, intfName1="lte", intfName2="s-lte",
            params1={"ip": "10.0.2.2/24", "gw": "10.0.2.1"}, params2={"ip": "10.0.2.1/24"},
            bw=lte_bw, loss=lte_loss, **_delay(lte_delay),
        )


def _flag(value) -> bool:
    return str(value).lower() in ("1", "true", "yes") if not isinstance(value, bool) else value


def _delay(value):
    return {} if value in (None, "none") else {"delay": value}


topos = {"handover": HandoverTopo}
