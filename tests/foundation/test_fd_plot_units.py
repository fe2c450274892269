"""Human units on plot axes and the provenance caption (scidl.runtime.plotting).

Before, axes read ``time (s)`` with ticks like 0.000025 and no figure said where or with
what its numbers were measured.
"""

from __future__ import annotations

import math

import pytest

from scidl.runtime.plotting import caption_text, format_si, provenance, si_scale


@pytest.mark.parametrize(("value", "unit", "binary", "text"), [
    (2.5e-5, "s", False, "25 µs"),
    (0.0123, "s", False, "12.3 ms"),
    (3.0, "s", False, "3 s"),
    (1500.0, "s", False, "1500 s"),        # no kiloseconds
    (4.2e-10, "s", False, "0.42 ns"),
    (1.234e9, "B/s", False, "1.23 GB/s"),
    (5.6e6, "B/s", False, "5.6 MB/s"),
    (65536, "B", True, "64 KiB"),
    (4 * 2**20, "B", True, "4 MiB"),
    (512, "B", True, "512 B"),
    (999.96e-6, "s", False, "1 ms"),      # rounding moves to the next prefix
    (-2e-3, "s", False, "-2 ms"),
    (0.0, "s", False, "0 s"),
])
def test_format_si(value, unit, binary, text):
    assert format_si(value, unit, binary=binary) == text


def test_format_si_non_finite():
    assert format_si(math.nan, "s") == "nan s"
    assert format_si(math.inf, "B/s") == "inf B/s"


def test_si_scale_picks_one_unit_from_the_data():
    assert si_scale([2e-5, 3e-3], "s") == (1e-3, "ms")
    assert si_scale([2e-5, 9e-5], "s") == (1e-6, "µs")
    assert si_scale([0.2, 1.7], "s") == (1.0, "s")
    assert si_scale([3e8, 1.2e9, math.nan], "B/s") == (1e9, "GB/s")
    assert si_scale([], "s") == (1.0, "s")


def test_caption_names_machine_versions_and_date():
    here = provenance()
    assert set(here) == {"host", "cpus", "torch", "scidl", "date"}
    text = caption_text({"host": "node17", "cpus": 64, "torch": "2.4.0", "scidl": "0.3",
                         "date": "2026-01-05"})
    assert text == "measured on node17 (64 CPUs) · torch 2.4.0 · SciDL 0.3 · 2026-01-05"
    old = caption_text({"host": "node17", "created": "2025-11-02T10:00:00Z"}, "trained")
    assert old.startswith("trained on node17 · torch ") and old.endswith("2025-11-02")
    unknown = caption_text({})
    assert unknown.startswith(f"rendered on {here['host']} ({here['cpus']} CPUs)")
