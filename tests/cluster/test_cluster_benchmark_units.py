"""The pure parts of benchmarks/cluster.py: order rotation, the slowest rank per step,
medians, and the rendered docs block quoting the numbers of its JSON."""

from __future__ import annotations

from pathlib import Path

from scidl.testing import load_repo_script

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    return load_repo_script("benchmarks/cluster.py")


def test_rotation_puts_every_case_first_once():
    b = _bench()
    items = ["a", "b", "c"]
    orders = [b.rotated(items, k) for k in range(3)]
    assert [o[0] for o in orders] == items and all(sorted(o) == items for o in orders)


def test_combine_takes_the_slowest_rank_per_step_and_rank0_bytes():
    b = _bench()
    r0 = {"dense": {"step_s": [1.0, 3.0], "exposed_s": [0.5, None], "comm_s": [0.1, 0.2], "bytes": [10, 10]}}
    r1 = {"dense": {"step_s": [2.0, 1.0], "exposed_s": [0.2, 0.4], "comm_s": [None, 0.1], "bytes": [99, 99]}}
    got = b.combine([r0, r1])["dense"]
    assert got == {"step_s": [2.0, 3.0], "exposed_s": [0.5, 0.4], "comm_s": [0.1, 0.2], "bytes": [10, 10]}
    row = b.summarize({"dense": got})[0]
    assert row["step_s"] == 2.5 and row["exposed_s"] == 0.45 and row["bytes_per_step"] == 10


def _part(link, dense, fp16, floor):
    rows = [{"case": c, "step_s": s, "exposed_s": None if c == "compute_only" else s / 2,
             "comm_s": None, "bytes_per_step": None, "all_step_s": [s, s / 2]}
            for c, s in (("dense", dense), ("fp16", fp16), ("compute_only", floor))]
    return {"link": link, "nodes": 4, "ranks_per_node": 1, "rows": rows}


def test_render_quotes_the_ratios_of_the_json():
    b = _bench()
    d = {"date": "2026-01-01T00:00:00+00:00", "command": "python benchmarks/cluster.py",
         "versions": {"torch": "2.x"}, "machine": {"cpus": 2}, "load_before": [1.0, 0, 0],
         "load_after": [2.0, 0, 0], "wall_s": 600,
         "config": {"params": 25_000_000, "repeats": 2,
                    "model": {"d_in": 1024, "width": 4096, "batch": 8}},
         "flat": [_part("100mbit", 10.0, 4.0, 1.0), _part("10gbit", 2.0, 3.0, 1.0)],
         "hier": {**_part("100mbit", 8.0, 8.0, 1.0), "rows": [
             {"case": "dense", "step_s": 8.0, "exposed_s": 6.0, "bytes_per_step": 1e8},
             {"case": "hierarchical", "step_s": 6.0, "exposed_s": 4.0, "bytes_per_step": 1e8}]}}
    out = b.render(d)
    assert "| fp16 | 4.00 [2.00–4.00] | 0.40 | 2.00 | 3.00 [1.50–3.00] | 1.50 | 1.50 |" in out
    assert "100mbit: `dense` 10.00 s per step, 5.00 s of it exposed" in out
    assert "faster than dense: `fp16` 0.40×; slower: none" in out
    assert "faster than dense: none; slower: `fp16` 1.50×" in out
    assert "0.75× the flat ring's step time (6.00 s vs 8.00 s; exposed communication 4.00" in out
