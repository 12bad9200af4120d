"""`Topo`: a topology description with the public API of Mininet's `mininet.topo.Topo`.

A topology file written against this class also loads with `mn --custom FILE`, because it imports
Mininet's `Topo` when Mininet is installed and this one otherwise; `Net` builds either. Only the
description lives here: nothing in this module touches the system.
"""

from __future__ import annotations

import re
from typing import Any, Iterator


def natural(text: Any) -> list:
    """Sort key: "h10" after "h9" (Mininet's `natural`)."""

    def num(s: str) -> Any:
        return int(s) if s.isdigit() else s

    return [num(s) for s in re.split(r"(\d+)", str(text))]


def natural_seq(items: Any) -> list:
    return [natural(x) for x in items]


class Topo:
    """Hosts, switches and links of an emulated network, Mininet style.

    Subclasses override `build()`; the constructor calls it with its own arguments, as Mininet's does.
    `hopts`, `sopts` and `lopts` give default options for hosts, switches and links.
    """

    def __init__(self, *args: Any, **params: Any) -> None:
        self.hopts: dict = params.pop("hopts", {})
        self.sopts: dict = params.pop("sopts", {})
        self.lopts: dict = params.pop("lopts", {})
        self._nodes: dict[str, dict] = {}
        self._links: list[tuple[str, str, int, dict]] = []  # (node1, node2, key, info) in order added
        # ports[src][sport] = (dst, dport), as in Mininet
        self.ports: dict[str, dict[int, tuple[str, int]]] = {}
        self.build(*args, **params)

    def build(self, *args: Any, **params: Any) -> None:
        """Override this method to build your topology."""

    # --- nodes ----------------------------------------------------------------------------------
    def addNode(self, name: str, **opts: Any) -> str:
        self._nodes[name] = dict(opts)
        return name

    def addHost(self, name: str, **opts: Any) -> str:
        if not opts and self.hopts:
            opts = self.hopts
        return self.addNode(name, **opts)

    def addSwitch(self, name: str, **opts: Any) -> str:
        if not opts and self.sopts:
            opts = self.sopts
        return self.addNode(name, isSwitch=True, **opts)

    def nodes(self, sort: bool = True) -> list[str]:
        names = list(self._nodes)
        return self.sorted(names) if sort else names

    def isSwitch(self, n: str) -> bool:
        return bool(self._nodes[n].get("isSwitch", False))

    def switches(self, sort: bool = True) -> list[str]:
        return [n for n in self.nodes(sort) if self.isSwitch(n)]

    def hosts(self, sort: bool = True) -> list[str]:
        return [n for n in self.nodes(sort) if not self.isSwitch(n)]

    def nodeInfo(self, name: str) -> dict:
        return self._nodes[name]

    def setNodeInfo(self, name: str, info: dict) -> None:
        self._nodes[name] = info

    # --- links ----------------------------------------------------------------------------------
    def addLink(
        self,
        node1: str,
        node2: str,
        port1: int | None = None,
        port2: int | None = None,
        key: int | None = None,
        **opts: Any,
    ) -> int:
        """Link two nodes. `opts`: intfName1/2, params1/2, bw, delay, jitter, loss, max_queue_size, ..."""
        if not opts and self.lopts:
            opts = self.lopts
        self._nodes.setdefault(node1, {})
        self._nodes.setdefault(node2, {})
        port1, port2 = self.addPort(node1, node2, port1, port2)
        info = dict(opts)
        info.update(node1=node1, node2=node2, port1=port1, port2=port2)
        if key is None:
            used = [k for a, b, k, _ in self._links if {a, b} == {node1, node2} and isinstance(k, int)]
            key = max([0] + used) + 1
        self._links.append((node1, node2, key, info))
        return key

    def iterLinks(self, withKeys: bool = False, withInfo: bool = False) -> Iterator[tuple]:
        for _a, _b, key, info in self._links:
            node1, node2 = info["node1"], info["node2"]
            if withKeys:
                yield (node1, node2, key, info) if withInfo else (node1, node2, key)
            else:
                yield (node1, node2, info) if withInfo else (node1, node2)

    def links(self, sort: bool = False, withKeys: bool = False, withInfo: bool = False) -> list[tuple]:
        links = list(self.iterLinks(withKeys, withInfo))
        if not sort:
            return links
        size = 3 if withKeys else 2
        return sorted(links, key=lambda link: natural_seq(link[:size]))

    def addPort(self, src: str, dst: str, sport: int | None = None, dport: int | None = None) -> tuple[int, int]:
        """Port numbers of a new link: hosts count from 0, switches from 1 (Mininet's rule)."""
        self.ports.setdefault(src, {})
        self.ports.setdefault(dst, {})
        if sport is None:
            sport = len(self.ports[src]) + (1 if self.isSwitch(src) else 0)
        if dport is None:
            dport = len(self.ports[dst]) + (1 if self.isSwitch(dst) else 0)
        self.ports[src][sport] = (dst, dport)
        self.ports[dst][dport] = (src, sport)
        return sport, dport

    def port(self, src: str, dst: str) -> Any:
        ports = [(sport, entry[1]) for sport, entry in self.ports[src].items() if entry[0] == dst]
        return ports if len(ports) != 1 else ports[0]

    def _link_entry(self, src: str, dst: str, key: int | None) -> int:
        matches = [i for i, (a, b, k, _) in enumerate(self._links) if {a, b} == {src, dst}]
        if not matches:
            raise KeyError((src, dst))
        if key is None:
            return min(matches, key=lambda i: self._links[i][2])
        for i in matches:
            if self._links[i][2] == key:
                return i
        raise KeyError((src, dst, key))

    def linkInfo(self, src: str, dst: str, key: int | None = None) -> dict:
        return self._links[self._link_entry(src, dst, key)][3]

    def setlinkInfo(self, src: str, dst: str, info: dict, key: int | None = None) -> None:
        i = self._link_entry(src, dst, key)
        a, b, k, _ = self._links[i]
        self._links[i] = (a, b, k, info)

    @staticmethod
    def sorted(items: Any) -> list:
        return sorted(items, key=natural)
