"""Top-k selection on one core: the exact ``torch.topk`` against the sampled threshold.

For a tensor of ``--numel`` normal floats (one thread), each round times the exact
method (:func:`scidl.comm.sparse.exact_topk`) and the sampled threshold
(:func:`scidl.comm.sparse.threshold_topk`, as ``topk`` uses it above
``exact_max_numel``) back to back, in alternating order; the figures are medians over
rounds and the ratio is the median of the rounds' paired ratios. Each round also
counts what a threshold taken at the k-th quantile of the sample itself would keep
(every entry above it, no trimming: ``topk``'s earlier rule), as a fraction of the
entries, against the requested density. Writes ``benchmarks/results/topk_selection.json``;
``python scripts/render_docs.py`` puts it into docs/communication.md.

    python benchmarks/topk_selection.py [--numel 6500000] [--densities 0.01 0.001] [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "topk_selection.json"


def quantile_only_fraction(x: Any, density: float, sample_fraction: float, gen: Any) -> float:
    """Entries kept by a threshold at the sample's own (1 − density) quantile (no margin,
    no trimming), as a fraction of ``x``'s entries."""
    import math

    import torch

    from scidl.comm.sparse import above

    n = x.numel()
    m = min(n, max(int(sample_fraction * n), math.ceil(64 / density)))
    sample = x[torch.randint(0, n, (m,), generator=gen)].abs()
    t = float(torch.topk(sample, max(1, round(density * m)), sorted=False).values.min())
    return above(x, t).numel() / n


def measure(numel: int, densities: list[float], rounds: int, sample_fraction: float = 0.01
            ) -> list[dict[str, Any]]:
    import torch

    from scidl.comm.sparse import exact_topk, k_for, threshold_topk

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(numel, generator=gen)
    out = []
    for density in densities:
        k = k_for(numel, density)
        exact_topk(x, k)  # warm-up: first calls allocate
        threshold_topk(x, k, sample_fraction, gen)
        t_exact, t_thr, ratios, sent, old = [], [], [], [], []
        for r in range(rounds):
            times = {}
            for name in (("exact", "threshold") if r % 2 == 0 else ("threshold", "exact")):
                t0 = time.perf_counter()
                idx = exact_topk(x, k) if name == "exact" else threshold_topk(
                    x, k, sample_fraction, gen)
                times[name] = time.perf_counter() - t0
                if name == "threshold":
                    sent.append(idx.numel() / numel)
            t_exact.append(times["exact"])
            t_thr.append(times["threshold"])
            ratios.append(times["exact"] / times["threshold"])
            old.append(quantile_only_fraction(x, density, sample_fraction, gen))
        out.append({"density": density, "k": k, "exact_s": statistics.median(t_exact),
                    "threshold_s": statistics.median(t_thr),
                    "speedup": statistics.median(ratios), "sent_fraction": statistics.median(sent),
                    "sent_fraction_min": min(sent),
                    "quantile_only_fraction": statistics.fmean(old),
                    "quantile_only_below_density": sum(f < density for f in old) / len(old)})
    return out


def markdown(d: dict[str, Any]) -> str:
    """The generated sentences of docs/communication.md."""
    parts = []
    for r in d["rows"]:
        parts.append(
            f"density {r['density'] * 100:g} %: `torch.topk` {r['exact_s']:.3f} s, threshold "
            f"{r['threshold_s']:.3f} s ({r['speedup']:.1f}× faster, median of paired rounds); "
            f"the threshold path sent {r['sent_fraction'] * 100:.3f} % of the entries (never "
            f"fewer than {r['sent_fraction_min'] * 100:.3f} %), a threshold at the sample's "
            f"own quantile would have kept {r['quantile_only_fraction'] * 100:.3f} % on "
            f"average, below the density in {r['quantile_only_below_density'] * 100:.0f} % "
            "of the rounds")
    return (f"On one core, for {d['numel'] / 1e6:.1f} M normal floats ({d['rounds']} "
            f"interleaved rounds, load average {d['load_before']:.1f}, {d['date']}; "
            "`python benchmarks/topk_selection.py`): " + "; ".join(parts) + ".")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--numel", type=int, default=6_500_000)
    ap.add_argument("--densities", type=float, nargs="+", default=[0.01, 0.001])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.rounds < 3:
        ap.error("--rounds must be at least 3")
    import torch

    load = os.getloadavg()[0]
    rows = measure(args.numel, args.densities, args.rounds)
    d = {"numel": args.numel, "rounds": args.rounds, "rows": rows, "load_before": load,
         "load_after": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"),
         "versions": {"torch": torch.__version__}, "cpus": os.cpu_count(),
         "machine": platform.machine(),
         "command": "python benchmarks/topk_selection.py " + " ".join(
             sys.argv[1:] if argv is None else argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(d, indent=2) + "\n")
    print(markdown(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
