"""What is up: the state file that lets `topo down` undo another process's `topo up`, and the lock
that keeps two topologies (two test runs, a test run and a `topo up`) from building at once.

One topology at a time per machine: its namespaces are named after its hosts, so two copies of
`two_path` would collide. The lock is an flock held for as long as a `Net` is started in a process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Any

from mptcrypt.errors import AlreadyRunningError

STATE_DIR = "/run/mptcrypt"
STATE_FILE = os.path.join(STATE_DIR, "topo.json")
LOCK_FILE = os.path.join(STATE_DIR, "topo.lock")
STATE_VERSION = 1


class TopoLock:
    """Exclusive, process-wide lock on LOCK_FILE, waited for up to `timeout` seconds."""

    def __init__(self, path: str = LOCK_FILE) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float) -> None:
        if self._fd is not None:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise AlreadyRunningError(
                        f"another mptcrypt topology is being built or used{holder} "
                        f"(waited {timeout:g} s for {self.path}); wait for it to finish"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" by pid {text}" if text.isdigit() else ""


def read_state(path: str = STATE_FILE) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"version": STATE_VERSION, "corrupt": True, "namespaces": []}
    return state if isinstance(state, dict) else None


def write_state(state: dict[str, Any], path: str = STATE_FILE) -> None:
    """Atomic replace, so a reader never sees half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def remove_state(path: str = STATE_FILE) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
