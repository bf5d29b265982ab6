"""The socket systemd listens on for sd_notify, for the tests of `run` and `serve` under systemd."""

from __future__ import annotations

import socket
import time

TIMEOUT = 30.0  # generous: CI machines are shared


class NotifySocket:
    """What systemd listens on: a unix datagram socket at a path or an abstract '@' address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def next(self, timeout: float) -> list[str] | None:
        """The fields of the next datagram, or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode().split("\n")
        except TimeoutError:
            return None

    def collect(self, seconds: float) -> list[list[str]]:
        """Every datagram that arrives in the next `seconds`."""
        seen: list[list[str]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None:
                seen.append(message)
        return seen

    def wait_for(self, field: str, timeout: float = TIMEOUT) -> list[list[str]]:
        """Datagrams up to and including the first holding a field that starts with `field`."""
        seen: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is None:
                break
            seen.append(message)
            if any(f.startswith(field) for f in message):
                return seen
        raise AssertionError(f"no {field} within {timeout}s; got {seen}")

    def close(self) -> None:
        self.sock.close()
