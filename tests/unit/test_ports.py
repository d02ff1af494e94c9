"""The free loopback port stays out of the kernel's ephemeral range, where an outgoing connection
could take it before the child binds it."""

from __future__ import annotations

import socket

import pytest

from shared import ports


def test_candidates_leave_out_the_ephemeral_range() -> None:
    candidates = ports.candidate_ports((32768, 60999))
    assert candidates[0] == ports.LOWEST
    assert 32767 in candidates and 61000 in candidates and 65535 in candidates
    assert not any(32768 <= p <= 60999 for p in candidates)


def test_the_port_is_outside_this_machines_ephemeral_range_and_bindable() -> None:
    low, high = ports.ephemeral_range()
    port = ports.free_loopback_port()
    assert not low <= port <= high
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))  # raises if it was not free


def test_a_port_is_never_handed_out_twice() -> None:
    handed = [ports.free_loopback_port() for _ in range(200)]
    assert len(set(handed)) == len(handed)


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        free = ports._kernel_pick()  # nothing listens there
        picks = iter([taken, free])
        monkeypatch.setattr(ports, "candidate_ports", lambda _range: [taken, free])
        monkeypatch.setattr(ports.random, "choice", lambda _c: next(picks))
        assert ports.free_loopback_port() == free


def test_when_every_port_is_ephemeral_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    port = ports.free_loopback_port()
    assert 1024 <= port <= 65535
