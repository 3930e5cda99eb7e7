"""sd_notify without a dependency: a few datagrams over ``$NOTIFY_SOCKET``.

Why not ``systemd-python``: it needs libsystemd headers to build, and the protocol is one
``sendto`` of ``KEY=value`` lines (systemd's own notify-selfcontained-example.py). A leading
``@`` names an abstract socket. With no ``NOTIFY_SOCKET`` every call is a no-op, so the daemon
runs the same under systemd, in a terminal and in tests.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING; never raises (systemd's absence is not an error)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or ""
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # sd_watchdog_enabled(3): ping at half
        self._sock: socket.socket | None = None
        self._last_status = ""
        self._last_ping = 0.0
        if environ is None:  # like sd_notify(unset_environment=1): workers must not inherit it
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self, healthy: bool) -> None:
        """Ping at half the interval, and only if the caller (the main loop) says it is healthy."""
        if self.watchdog_interval is None or not healthy:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
