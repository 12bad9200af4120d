"""sd_notify(3) by hand: the daemon tells systemd (Type=notify) when it is ready, reloading and stopping.

The protocol is one datagram per message on the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract
name written with a leading "@"), newline-separated VAR=value assignments (sd_notify(3), "Notes"). Without
NOTIFY_SOCKET (not started by systemd) every call is a no-op, so the daemon calls these unconditionally.

    READY=1                      rules installed, packets are being handled (systemd: "active")
    RELOADING=1 ... READY=1      around a configuration reload (SIGHUP, `systemctl reload`)
    STOPPING=1                   shutdown began (rules are being removed)
    STATUS=...                   a one-line status for `systemctl status`
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import Iterator

log = logging.getLogger("mptcrypt.notify")

NOTIFY_ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str:
    """$NOTIFY_SOCKET -> an address for sendto: "@name" is the abstract name "\\0name"."""
    return "\0" + value[1:] if value.startswith("@") else value


class Notifier:
    """Sends sd_notify messages to `address` (None: do nothing). Never raises: a lost notification must not take
    the daemon down (systemd then reports a start timeout, which says what happened)."""

    def __init__(self, address: str | None):
        self.address = address
        self._warned = False

    @classmethod
    def from_env(cls, environ=os.environ) -> "Notifier":
        value = environ.get(NOTIFY_ENV)
        return cls(socket_address(value) if value else None)

    def send(self, **fields: str | int) -> bool:
        """One datagram with FIELD=value lines, e.g. send(READY=1, STATUS="up"). True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("could not notify systemd at %r: %s", self.address.replace("\0", "@"), exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    @contextlib.contextmanager
    def reloading(self, status: str = "") -> Iterator[None]:
        """Wrap a configuration reload: RELOADING=1 (with MONOTONIC_USEC, which systemd 253+ wants) before, READY=1
        after, also when the reload failed (the daemon keeps running with its old configuration)."""
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            yield
        finally:
            self.ready(status)
