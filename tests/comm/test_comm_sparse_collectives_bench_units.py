"""The pure parts of benchmarks/sparse_collectives.py and topk_accuracy.py: the kept-norm
share of a re-sparsified sum, the rendered table quoting its JSON, the result sections."""

from __future__ import annotations

import pytest
import torch

from scidl.testing import load_repo_script


def test_captured_share_compares_with_the_top_of_the_exact_sum():
    bench = load_repo_script("benchmarks/sparse_collectives.py")
    exact = torch.tensor([4.0, -3.0, 0.5, 1.0, 2.0, -0.1])
    best = torch.tensor([4.0, -3.0, 0.0, 0.0, 0.0, 0.0])
    worse = torch.tensor([4.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert bench.captured_share(best, exact) == 1.0
    assert bench.captured_share(worse, exact) == pytest.approx(17 / 25)
    # per parameter (sizes 3, 3): one entry in each; the second's top is 2.0, not 1.0
    per = torch.tensor([4.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert bench.captured_share(per, exact, [3, 3]) == pytest.approx(17 / 20)
    assert bench.captured_share(torch.zeros(6), exact) == 1.0


def test_table_quotes_the_json_rows():
    bench = load_repo_script("benchmarks/sparse_collectives.py")
    rows = []
    for coll, mode, sent in (("allgather", "sparse", 300.0), ("rsag", "rsag", 330.0),
                             ("oktopk", "oktopk", 150.0), ("dense", "dense", 9000.0),
                             ("auto", "oktopk", 150.0)):
        row = {"gradients": "mlp", "density": 0.01, "ranks": 4, "collective": coll,
               "mode": mode, "bytes_sent": sent, "wire_bytes": sent + 2, "fill": 0.5,
               "n": 1000, "k": 10}
        if coll == "oktopk":
            row.update(kept=11, captured=0.9, captured_per_parameter=0.99)
        rows.append(row)
    md = bench.markdown({"rows": rows, "date": "2026-01-01"})
    line = md.splitlines()[2]
    assert line.startswith("| MLP (real) | 1.0% | 4 | 300 | 330 | 1.10 | 150 | 0.50 | 152 ")
    assert "| 1.10 | 0.990 | 0.900 | 0.500 | 9,000 | oktopk |" in line


def test_topk_accuracy_sections_keep_two_processes_as_before():
    bench = load_repo_script("benchmarks/topk_accuracy.py")
    assert bench._section(30, 2) == "epochs_30"
    assert bench._section(30, 4) == "epochs_30_p4"
    over = bench._overrides("dgc_1%_oktopk", 1, 30, "/r", 4)
    assert over[0] == "dist.nproc=4" and "comm.sparse_collective=oktopk" in over
