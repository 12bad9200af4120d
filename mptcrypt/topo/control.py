"""Whole-topology operations from any process: up from a file, down from the state file, clean, status."""

from __future__ import annotations

import os
import time
from typing import Any

from mptcrypt.topo import netns
from mptcrypt.topo.loader import load_topo
from mptcrypt.topo.net import Net
from mptcrypt.topo.state import STATE_FILE, TopoLock, read_state, remove_state

CLI_LOCK_TIMEOUT = 10.0  # `topo up` / `topo down` wait this long for a topology being built elsewhere


def up(path: str, spec: str | None = None, state_file: str = STATE_FILE, lock_timeout: float = CLI_LOCK_TIMEOUT) -> Net:
    """Build a topology file's topology and leave it up after this process exits (`mptcrypt topo up`)."""
    netns.require_root("mptcrypt topo up")
    topo, name, args, kwargs = load_topo(path, spec)
    source = {"file": os.path.abspath(path), "topo": name, "args": args, "kwargs": kwargs}
    net = Net(topo, state_file=state_file, lock_timeout=lock_timeout, source=source)
    net.start()
    net.detach()
    return net


def down(state_file: str = STATE_FILE, lock_timeout: float = CLI_LOCK_TIMEOUT) -> list[str]:
    """Delete the namespaces (and their processes) that the state file says `topo up` made.

    Returns the namespaces removed; [] when nothing was up."""
    netns.require_root("mptcrypt topo down")
    lock = TopoLock()
    lock.acquire(lock_timeout)
    try:
        state = read_state(state_file)
        if state is None:
            return []
        removed = [ns for ns in state.get("namespaces", []) if ns.startswith(netns.NAME_PREFIX) and netns.delete(ns)]
        remove_state(state_file)
        return removed
    finally:
        lock.release()


def clean(state_file: str = STATE_FILE) -> list[str]:
    """Delete every `mptc-` namespace and its processes, whoever made it; forget the state."""
    netns.require_root("mptcrypt topo clean")
    removed = netns.clean()
    remove_state(state_file)
    return removed


def status(state_file: str = STATE_FILE) -> dict[str, Any]:
    """What is up: the state file's record, which of its namespaces exist, and stray `mptc-` ones."""
    state = read_state(state_file)
    present = netns.list_namespaces()
    info: dict[str, Any] = {"state": state, "namespaces": present}
    if state is not None:
        mine = state.get("namespaces", [])
        info["missing"] = [ns for ns in mine if ns not in present]
        info["stray"] = [ns for ns in present if ns not in mine]
        if "created" in state:
            info["age_s"] = round(time.time() - state["created"], 1)
    else:
        info["missing"], info["stray"] = [], present
    return info
