"""A ``HOST:PORT`` listen address (``metrics.listen``), checked when the config is read.

Why a module of its own: the config validates the address (so ``check-config`` names a bad
one, exit 78) and the daemon binds it (``daemon/metrics.py``); both need the same reading
of ``[::1]:9464`` versus ``127.0.0.1:9464``. The check is by syntax only: resolving a host
name here would make a config reload wait on DNS, and whether the address belongs to this
host is only known when binding it, which the daemon reports with the reason.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from smaskd.errors import ConfigError

__all__ = ["Listen", "parse_listen"]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_EXPECTED = ('expected "HOST:PORT", e.g. "127.0.0.1:9464", "[::1]:9464" or "0.0.0.0:9464" '
             "(every interface)")


@dataclass(frozen=True, slots=True)
class Listen:
    """Where to listen: ``host`` is an IP literal (IPv6 without brackets) or a host name."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: object, where: str) -> Listen:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"localhost:9464"`` → :class:`Listen`;
    anything else is a ``ConfigError`` at ``where`` saying what was expected."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(_EXPECTED, where)
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{_EXPECTED}; got {value!r}", where)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{host!r} in brackets is not an IPv6 address", where) from None
    elif ":" in host:
        raise ConfigError(f"an IPv6 address goes in brackets: \"[{host}]:{port_text}\"", where)
    elif re.fullmatch(r"[0-9.]+", host) and not _is_ipv4(host):
        raise ConfigError(f"{host!r} is not an IPv4 address", where)
    elif not _is_ipv4(host) and not _HOSTNAME.match(host):
        raise ConfigError(f"{host!r} is neither an IP address nor a host name", where)
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"port {port_text!r}: expected a number from 1 to 65535", where)
    return Listen(host, int(port_text))


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
