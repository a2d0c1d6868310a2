"""Network address facts used by the client, the position server, the simulator and the demo.

Owns no state: :func:`is_loopback` decides whether a host is this machine (a secret is then optional)
and :func:`free_port` finds a TCP port for tests, the demo and the benchmarks.
"""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; any other name counts as remote."""
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "ip6-localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for tests and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
