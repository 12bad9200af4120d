"""Emulated multipath networks on network namespaces, with a Mininet-compatible `Topo`.

    from mptcrypt.topo import Net, load_topo
    topo, *_ = load_topo("topologies/two_path.py")
    with Net(topo) as net:
        print(net["client"].cmd("ping -c1 10.0.1.1"))

Layout: `graph` (Topo), `spec` (topology -> validated plan, pure), `net` (Net, Node: apply the plan,
run-time changes), `netns` (named namespaces), `state` (state file, lock), `loader` (topology files),
`control` (up/down/clean/status from any process), `subflows` (MPTCP subflow and counter readers),
`cli` (`mptcrypt topo ...`).
"""

from mptcrypt.topo.graph import Topo
from mptcrypt.topo.loader import load_topo, split_topo_spec, topo_names
from mptcrypt.topo.net import Net, Node
from mptcrypt.topo.spec import plan_topology
from mptcrypt.topo.state import STATE_FILE
from mptcrypt.topo.subflows import demo_two_subflows, mptcp_counters, tcp_subflows

__all__ = [
    "STATE_FILE",
    "Net",
    "Node",
    "Topo",
    "demo_two_subflows",
    "load_topo",
    "mptcp_counters",
    "plan_topology",
    "split_topo_spec",
    "tcp_subflows",
    "topo_names",
]
