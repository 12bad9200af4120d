"""Daemons for the lab (tests, demo, attack suite, handover): start `mptcrypt daemon` in a network namespace,
wait until it is ready, read its log, stop it. Not part of the product: the daemon itself is mptcrypt.daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from mptcrypt.daemon.main import READY_MARKER
from mptcrypt.errors import MptcryptError


def spawn_in_netns(
    ns: str | None,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 15.0,
    log_path: str | None = None,
) -> subprocess.Popen:
    """Start `mptcrypt daemon ARGS` in namespace `ns` (None: this one) and wait until it is ready.

    Its output goes to a log file, `proc.log_path` (read it with `daemon_log(proc)`). Raises MptcryptError with the
    log if the daemon exits or is not ready within `timeout` seconds (then it is killed). `ip netns exec` execs the
    daemon in place, so `proc.pid` is the daemon's pid. Stop it with `stop(proc)`.
    """
    own_log = log_path is None
    if own_log:
        fd, log_path = tempfile.mkstemp(prefix=f"mptcrypt-daemon-{ns or 'here'}-", suffix=".log")
        os.close(fd)
    argv = [sys.executable, "-m", "mptcrypt", "daemon", *args]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    full_env = dict(os.environ, **(env or {}))
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    proc.log_path = log_path  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        if READY_MARKER in daemon_log(proc):
            return proc
        failed = None
        if proc.poll() is not None:
            failed = f"exited with {proc.returncode}"
        elif time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            failed = f"was not ready in {timeout:g} s"
        if failed:
            output = daemon_log(proc)
            if own_log:
                os.unlink(log_path)
            raise MptcryptError(f"the daemon in {ns or 'this namespace'} {failed}:\n{output}")
        time.sleep(0.02)


def daemon_log(proc: subprocess.Popen) -> str:
    try:
        with open(proc.log_path, errors="replace") as fh:  # type: ignore[attr-defined]
            return fh.read()
    except FileNotFoundError:
        return ""


def stop(proc: subprocess.Popen, timeout: float = 10.0, remove_log: bool = False) -> int:
    """SIGTERM the daemon and wait (SIGKILL after `timeout` s). Returns its exit status (0 = clean stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if remove_log:
        try:
            os.unlink(proc.log_path)  # type: ignore[attr-defined]
        except (FileNotFoundError, AttributeError):
            pass
    return proc.returncode
