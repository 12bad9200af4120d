"""Named network namespaces: create, find, run in, empty of processes, delete. Only `mptc-` names.

A namespace made here is a file under /run/netns, exactly as `ip netns add` makes it, so every tool
can enter it with `ip netns exec mptc-HOST ...`. Deleting one first kills, by PID, the processes
still inside it (what `ip netns pids` lists), then unmounts it; its interfaces, bridges, qdiscs and
iptables rules go with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Sequence

from mptcrypt.constants import NAME_PREFIX
from mptcrypt.errors import ConfigError, KernelFeatureError, NotRootError

NETNS_RUN_DIR = "/run/netns"
KILL_GRACE_S = 1.0  # SIGTERM, then SIGKILL after this long


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise NotRootError(f"{action} needs root (network namespaces): run it as root")


def require_tools() -> None:
    if shutil.which("ip") is None:
        raise KernelFeatureError("the `ip` command (iproute2) is missing: run `make setup` or apt-get install iproute2")


def _own(name: str) -> str:
    if not name.startswith(NAME_PREFIX) or "/" in name or name in (".", ".."):
        raise ConfigError(f"refusing to touch namespace {name!r}: mptcrypt only manages '{NAME_PREFIX}*' names")
    return name


def ns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(ns_path(name))


def list_namespaces(prefix: str = NAME_PREFIX) -> list[str]:
    """Named namespaces whose name starts with `prefix`."""
    try:
        names = os.listdir(NETNS_RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def create(name: str) -> None:
    from pyroute2 import netns

    _own(name)
    try:
        netns.create(name)
    except OSError as exc:
        raise KernelFeatureError(f"cannot create network namespace {name}: {exc}") from exc


def pids(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is `name` (what `ip netns pids NAME` prints)."""
    try:
        st = os.stat(ns_path(name))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            pst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # gone, or a kernel thread
            continue
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(entry))
    me = os.getpid()
    return sorted(p for p in found if p != me)


def kill_pids(pid_list: Sequence[int], grace: float = KILL_GRACE_S) -> None:
    """SIGTERM each PID, then SIGKILL those still alive after `grace` seconds."""
    alive = []
    for pid in pid_list:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Alive and not a zombie. Our own children are not reaped here: their Popen objects do that."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def delete(name: str) -> bool:
    """Kill the processes in namespace `name`, then remove it. False if it did not exist."""
    from pyroute2 import netns

    _own(name)
    if not exists(name):
        return False
    kill_pids(pids(name))
    netns.remove(name)
    return True


def clean(prefix: str = NAME_PREFIX) -> list[str]:
    """Delete every namespace named `prefix*` (and its processes). Returns the names removed."""
    _own(prefix + "x")
    removed = []
    for name in list_namespaces(prefix):
        if delete(name):
            removed.append(name)
    return removed


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def run_scripts(scripts: dict[str, str], timeout: float = 30.0) -> None:
    """Run one `sh` script in each namespace, all at once; raise with the first failure's stderr."""
    procs = {}
    for ns, script in scripts.items():
        procs[ns] = subprocess.Popen(
            exec_argv(ns, ["sh", "-c", script]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    errors = []
    for ns, proc in procs.items():
        try:
            _out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            errors.append(f"{ns}: timed out after {timeout:g} s")
            continue
        if proc.returncode != 0:
            errors.append(f"{ns}: {err.strip() or 'exit status %d' % proc.returncode}")
    if errors:
        raise KernelFeatureError("configuring the namespaces failed: " + "; ".join(errors))
