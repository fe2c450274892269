"""Rendezvous ports come from outside the ephemeral range, where outgoing connections
of other jobs cannot take them between the lookup and the listen."""

from __future__ import annotations

import socket

from scidl.runtime.ports import candidate_ports, ephemeral_range, free_port


def test_ports_are_drawn_outside_the_ephemeral_range_and_are_free():
    lo, hi = ephemeral_range()
    for _ in range(50):
        port = free_port()
        assert not lo <= port <= hi
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", port))  # free on every interface


def test_candidates_sit_above_a_range_that_starts_low():
    assert candidate_ports((32768, 60999)) == range(10000, 32768)
    assert candidate_ports((1024, 40000)) == range(40001, 65536)


def test_unreadable_range_file_falls_back_to_linux_default(tmp_path):
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)
    bad = tmp_path / "bad"
    bad.write_text("x y")
    assert ephemeral_range(bad) == (32768, 60999)
