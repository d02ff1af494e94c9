"""A free loopback port for a process we are about to start (ingest's children, test and bench
stacks).

Not the kernel's own pick (`bind(("127.0.0.1", 0))`): that port comes from the ephemeral range, the
same range every outgoing connection takes its local port from. Between closing the probe socket
and the child binding it, a Kafka or database connection can take the port, and the child fails
with EADDRINUSE (a CI run lost an e2e stack that way). A port below the ephemeral range is never
handed to an outgoing connection, so only a listener can take it, and the probe bind sees that."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
LOWEST = 10000  # below: the well-known and registered services people run on a dev machine
ATTEMPTS = 200

# Ports this process handed out: two components of one stack must never be given the same one,
# and neither is listening yet when the second asks.
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL


def candidate_ports(ephemeral: tuple[int, int]) -> list[int]:
    """The ports outside the ephemeral range, from LOWEST up."""
    low, high = ephemeral
    return [p for p in range(LOWEST, 65536) if not low <= p <= high]


def free_loopback_port() -> int:
    candidates = candidate_ports(ephemeral_range())
    if not candidates:  # the whole range is ephemeral: the kernel's pick is all there is
        return _kernel_pick()
    for _ in range(ATTEMPTS):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue  # something listens there (or lingers): try another
        _handed_out.add(port)
        return port
    return _kernel_pick()


def _kernel_pick() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
