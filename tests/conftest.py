"""Shared fixtures.

- `root`: skips the test unless it runs as root with working `ip netns` (integration tests). Tests
  marked `@pytest.mark.root` are skipped the same way at collection.
- `make_net(topo_or_file, spec=None, **net_kwargs) -> Net`: builds and starts a network from a `Topo`
  instance or a topology file (a bare name such as "two_path.py" is looked up in topologies/); every
  network it made is torn down after the test, whatever happened.
- `two_path_net`: a started `Net` of topologies/two_path.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"

_netns_reason: list[str | None] = []


def netns_unavailable() -> str | None:
    """Why integration tests cannot run here, or None when they can."""
    if not _netns_reason:
        reason = None
        if os.geteuid() != 0:
            reason = "needs root (network namespaces, veth, iptables)"
        elif shutil.which("ip") is None:
            reason = "needs iproute2's `ip`"
        elif subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
            reason = "`ip netns` does not work on this machine"
        _netns_reason.append(reason)
    return _netns_reason[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") is not None:
            reason = netns_unavailable()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def root() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


def topology_path(name: str | os.PathLike) -> str:
    path = Path(name)
    if not path.exists() and (TOPOLOGIES / path).exists():
        path = TOPOLOGIES / path
    return str(path)


@pytest.fixture
def make_net(root: None) -> Iterator[Any]:
    from mptcrypt.topo import Net, load_topo

    nets: list[Net] = []

    def make(topo: Any, spec: str | None = None, **kwargs: Any) -> Net:
        if isinstance(topo, (str, os.PathLike)):
            topo, *_ = load_topo(topology_path(topo), spec)
        net = Net(topo, **kwargs)
        nets.append(net)
        return net.start()

    try:
        yield make
    finally:
        for net in reversed(nets):
            net.stop()


@pytest.fixture
def two_path_net(make_net: Any) -> Any:
    return make_net("two_path.py")
