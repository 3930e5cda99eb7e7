"""sd_notify over a real datagram socket: path and abstract addresses, watchdog honesty."""

from __future__ import annotations

import os
import socket
import tempfile

from smaskd.daemon.notify import Notifier


def _recv(sock: socket.socket) -> str:
    sock.settimeout(2)
    return sock.recv(4096).decode()


def test_path_socket() -> None:
    folder = tempfile.mkdtemp(prefix="smn")
    path = os.path.join(folder, "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path})
        n.ready("queued=0")
        assert _recv(sock) == "READY=1\nSTATUS=queued=0"
        n.status("x")
        n.status("x")  # unchanged: not re-sent
        n.stopping()
        assert _recv(sock) == "STATUS=x"
        assert _recv(sock) == "STOPPING=1"
        n.close()
    os.unlink(path)
    os.rmdir(folder)


def test_abstract_socket_and_watchdog() -> None:
    name = f"smaskd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        n = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "100000"})
        assert n.watchdog_interval == 0.05
        n.watchdog(healthy=False)  # an unhealthy loop never pings
        n.watchdog(healthy=True)
        assert _recv(sock) == "WATCHDOG=1"
        n.close()


def test_no_socket_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and n.send("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
