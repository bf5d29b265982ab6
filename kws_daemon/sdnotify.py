"""sd_notify(3) without libsystemd: newline-separated KEY=VALUE datagrams to $NOTIFY_SOCKET.

Outside systemd (no NOTIFY_SOCKET) every call is a no-op, so the daemon has one code path.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger("kws_daemon")


class Notifier:
    """Reads and unsets NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (as sd_notify's unset_environment
    does), so hook commands cannot speak for the daemon; `watchdog_s` is None when systemd wants no pings."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        usec = env.pop("WATCHDOG_USEC", "")
        pid = env.pop("WATCHDOG_PID", "")
        self._socket: socket.socket | None = None
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._warned = False
        self.watchdog_s: float | None = None
        if not address:
            return
        if address[0] not in "/@":
            log.warning(
                "NOTIFY_SOCKET=%s is neither an absolute path nor an abstract address; ignored", address
            )
            return
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        if usec.isdecimal() and int(usec) > 0 and pid in ("", str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    def send(self, *fields: str) -> None:
        """One datagram, e.g. send("READY=1", "STATUS=listening"); a failure is logged once, never raised."""
        if self._socket is None:
            return
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            self._socket.sendto(message, self._address)
        except OSError as e:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s", self._address.replace("\0", "@"), e)
                self._warned = True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
