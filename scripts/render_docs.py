"""Render the results tables in ``docs/`` from ``benchmarks/results/*.json``.

Every generated block in a page sits between two marker lines::

    <!-- generated:KEY -->
    ...rendered markdown...
    <!-- /generated:KEY -->

``REGISTRY`` maps each KEY to the results file it reads and the pure function (in
``doc_tables.py``) that turns the parsed JSON into markdown.

    python scripts/render_docs.py            # rewrite every block in place
    python scripts/render_docs.py --check    # exit 1 listing blocks that differ

Tables with numbers outside generated blocks must be marked as static (a configuration
reference, a list of test cases) with a ``<!-- static-table: why -->`` line right above
them; ``find_unmarked_tables`` lists the others.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_tables as t  # noqa: E402
import doc_tables_workloads as w  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import anderson as anderson_bench  # noqa: E402  (benchmarks/anderson.py)
import cluster as cluster_bench  # noqa: E402  (benchmarks/cluster.py)
import comm_fidelity  # noqa: E402  (benchmarks/comm_fidelity.py)
import comm_tta  # noqa: E402  (benchmarks/comm_tta.py)
import malformed_inputs  # noqa: E402
import predict_cluster  # noqa: E402  (benchmarks/predict_cluster.py)
import sparse_collectives  # noqa: E402  (benchmarks/sparse_collectives.py)
import topk_accuracy  # noqa: E402  (benchmarks/topk_accuracy.py)
import topk_selection  # noqa: E402  (benchmarks/topk_selection.py)


def _bench_module(name: str):  # noqa: ANN202
    """benchmarks/NAME.py under the name NAME_bench (benchmarks/data.py sits beside a
    benchmarks/data/ folder, so a plain import of ``data`` is ambiguous)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"{name}_bench", Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


data_bench = _bench_module("data")
scaling_bench = _bench_module("scaling")
claims_bench = _bench_module("claims")
weather_seg_bench = _bench_module("weather_seg")  # benchmarks/weather_seg.py

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "benchmarks/results"


@dataclass(frozen=True)
class Block:
    """One generated block: the results file it reads and its renderer."""

    json_file: str
    render: Callable[[Any], str]


def _b(name: str, render: Callable[[Any], str]) -> Block:
    return Block(f"{RESULTS}/{name}.json", render)


REGISTRY: dict[str, Block] = {
    # docs/benchmarks.md
    "engine_overhead": _b("engine_overhead", t.engine_overhead),
    "first_result": _b("first_result", t.first_result),
    # docs/hybrid.md
    "hybrid": _b("hybrid", t.hybrid),
    "hybrid_memory": _b("hybrid", t.hybrid_memory),
    # docs/sharding.md (and docs/benchmarks.md)
    "fsdp_memory": _b("fsdp_memory", t.fsdp_memory),
    # docs/communication.md
    "sparse_embedding": _b("sparse_embedding", t.sparse_embedding),
    "comm_convergence": _b("comm", partial(t.comm_convergence, section="convergence")),
    "comm_convergence_sgd": _b("comm", partial(t.comm_convergence, section="convergence_sgd")),
    "comm_speed": _b("comm", partial(t.comm_speed, section="speed")),
    "sparse_collectives": _b("sparse_collectives", sparse_collectives.markdown),
    "topk_accuracy": _b("topk_accuracy", topk_accuracy.markdown),
    "topk_selection": _b("topk_selection", topk_selection.markdown),
    "comm_tta": _b("comm_tta", comm_tta.markdown),
    "comm_tta_targets": _b("comm_tta", comm_tta.markdown_targets),
    "comm_fidelity": _b("comm_fidelity", comm_fidelity.markdown),
    # docs/optimizers.md
    "optim_admissions_b40": _b("optim", partial(t.optim_admissions, section="admissions_b40")),
    "optim_admissions_b8": _b("optim", partial(t.optim_admissions, section="admissions_b8")),
    "optim_timing_b40": _b("optim", t.optim_timing),
    "optim_admissions_summary": _b("optim", t.optim_admissions_summary),
    "optim_burgers": _b("optim", t.optim_burgers),
    "anderson_admissions": _b("anderson", anderson_bench.table_admissions),
    "anderson_admissions_2proc": _b("anderson", partial(anderson_bench.table_admissions,
                                                        key="admissions_2proc")),
    "anderson_burgers": _b("anderson", anderson_bench.table_burgers),
    "anderson_before_after": _b("anderson", anderson_bench.table_before_after),
    "anderson_before_after_blas": _b("anderson", partial(
        anderson_bench.table_before_after, key="admissions_before_after_blas")),
    "optim_digits": _b("optim", t.optim_digits),
    "optim_filtering": _b("optim", t.optim_filtering),
    "optim_ensemble": _b("optim", t.optim_ensemble),
    # docs/search.md
    "search_compare": _b("search", t.search_compare),
    "search_pareto": _b("search", t.search_pareto),
    "search_workers": _b("search", t.search_workers),
    # docs/scaling.md
    "scaling_published": _b("scaling_published", t.scaling_published),
    "scaling_flops_basis": _b("scaling_published", t.scaling_flops_basis),
    "scaling_published_summary": _b("scaling_published", t.scaling_published_summary),
    "scaling_published_misses": _b("scaling_published", scaling_bench.render_misses),
    "scaling_cluster": _b("predict_cluster", predict_cluster.render),  # beside the benchmark
    "scaling_cluster_layout": _b("predict_cluster_layout", predict_cluster.render),
    # docs/workloads/*.md (and docs/topology.md)
    "emulator": _b("workloads_emulator_inverse_weather", w.emulator),
    "emulator_summary": _b("workloads_emulator_inverse_weather", w.emulator_summary),
    "inverse": _b("workloads_emulator_inverse_weather", w.inverse),
    "weather_seg": _b("workloads_emulator_inverse_weather", w.weather_seg),
    "alloy": _b("workloads_alloy_ising_geneexpr", w.alloy_summary),
    "alloy_learning_curve": _b("workloads_alloy_ising_geneexpr", w.alloy_learning_curve),
    "ising": _b("workloads_alloy_ising_geneexpr", w.ising),
    "geneexpr": _b("workloads_alloy_ising_geneexpr", w.geneexpr),
    "cgan": _b("workloads_cgan_noisy_topology", w.cgan),
    "cgan_weak_scaling": _b("workloads_cgan_noisy_topology", w.cgan_weak_scaling),
    "noisy": _b("workloads_cgan_noisy_topology", w.noisy),
    "noisy_target": _b("workloads_cgan_noisy_topology", w.noisy_target),
    "noisy_summary": _b("workloads_cgan_noisy_topology", w.noisy_summary),
    "topology_bumps": _b("workloads_cgan_noisy_topology", w.topology_bumps),
    "topology_burgers": _b("workloads_cgan_noisy_topology", w.topology_burgers),
    "topology_target": _b("workloads_cgan_noisy_topology", w.topology_target),
    "burgers_budget": _b("workloads_burgers", w.burgers_budget),
    "burgers_target": _b("workloads_burgers", w.burgers_target),
    "burgers_pinn": _b("burgers_pinn", partial(w.burgers_pinn, labels=("demo", "fp64"))),
    "burgers_hd_pinn": _b("burgers_pinn", partial(w.burgers_pinn, labels=("hd_d2", "hd_d100"))),
    "burgers_eval_cost": _b("burgers_pinn", w.burgers_eval_cost),
    "nbody_kepler": _b("workloads_nbody", w.nbody_kepler),
    "nbody_long": _b("workloads_nbody", w.nbody_long),
    "nbody_general": _b("workloads_nbody", w.nbody_general),
    "nbody_speed": _b("workloads_nbody", w.nbody_speed),
    "nbody_integrator": _b("nbody_integrator", w.nbody_integrator),
    "nbody_accuracy": _b("nbody_integrator", w.nbody_accuracy),
    # docs/cluster.md: strategies over shaped links (its renderer sits beside the benchmark)
    "cluster": _b("cluster", cluster_bench.render),
    # docs/reliability.md: the malformed-input table (its renderer sits beside its cases)
    "reliability": _b("reliability", malformed_inputs.render),
    # docs/data.md: file datasets vs plain reads, training from disk vs memory
    "data": _b("data", data_bench.render),
    # documented claims measured in their papers' regimes (benchmarks/claims.py)
    "claims_inverse": _b("claims", claims_bench.render("inverse")),  # docs/workloads/inverse.md
    "claims_filtering": _b("claims", claims_bench.render("filtering")),  # docs/optimizers.md
    "claims_pareto": _b("claims", claims_bench.render("pareto")),  # docs/search.md
    "claims_pareto_e20": _b("claims", claims_bench.render("pareto", "pareto_e20")),  # docs/search.md
    "claims_workers": _b("claims", claims_bench.render("workers")),  # docs/search.md
    # docs/workloads/weather_seg.md: IoU at the DeepCAM target (renderers beside the benchmark)
    "weather_seg_seeds": _b("weather_seg", weather_seg_bench.table_seeds),
    "weather_seg_verdict": _b("weather_seg", weather_seg_bench.verdict),
    "weather_seg_scaling": _b("weather_seg", weather_seg_bench.table_scaling),
    "weather_seg_netcdf": _b("weather_seg", weather_seg_bench.table_netcdf),
    "weather_seg_variants": _b("weather_seg", weather_seg_bench.table_variants),
}

BEGIN = re.compile(r"^<!-- generated:([\w.-]+) -->$")
END = re.compile(r"^<!-- /generated:([\w.-]+) -->$")
STATIC = re.compile(r"^<!-- static-table: .+ -->$")


def doc_pages(root: Path = ROOT) -> list[Path]:
    """Every markdown page checked: ``docs/**/*.md``."""
    return sorted((root / "docs").rglob("*.md"))


def split_blocks(text: str) -> list[tuple[str | None, list[str]]]:
    """Split a page into (None, lines) outside blocks and (KEY, inner lines) inside.

    Raises ValueError on a marker without its partner.
    """
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    key: str | None = None
    for n, line in enumerate(text.split("\n"), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if key is not None:
                raise ValueError(f"line {n}: generated:{begin[1]} opens inside generated:{key}")
            key = begin[1]
            parts[-1][1].append(line)
            parts.append((key, []))
        elif end:
            if end[1] != key:
                raise ValueError(f"line {n}: /generated:{end[1]} closes {key or 'nothing'}")
            key = None
            parts.append((None, [line]))
        else:
            parts[-1][1].append(line)
    if key is not None:
        raise ValueError(f"generated:{key} is never closed")
    return parts


def render_key(key: str, root: Path = ROOT, cache: dict[str, Any] | None = None) -> str:
    """The markdown block KEY renders to from its results file (no trailing newline)."""
    if key not in REGISTRY:
        raise KeyError(f"generated:{key} is not in the registry of scripts/render_docs.py")
    block = REGISTRY[key]
    cache = {} if cache is None else cache
    if block.json_file not in cache:
        cache[block.json_file] = json.loads((root / block.json_file).read_text())
    return block.render(cache[block.json_file]).rstrip("\n")


def render_page(text: str, root: Path = ROOT, cache: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """Page text with every block re-rendered, and the keys whose content changed."""
    out: list[str] = []
    changed: list[str] = []
    for key, lines in split_blocks(text):
        if key is None:
            out.extend(lines)
            continue
        new = render_key(key, root, cache).split("\n")
        if new != lines:
            changed.append(key)
        out.extend(new)
    return "\n".join(out), changed


def find_unmarked_tables(text: str) -> list[int]:
    """Line numbers of markdown tables with a digit in their body that sit outside
    generated blocks and have no ``<!-- static-table: why -->`` line right above."""
    bad: list[int] = []
    lineno = 0
    for key, lines in split_blocks(text):
        start = lineno
        lineno += len(lines)
        if key is not None:
            continue
        i = 0
        while i < len(lines):
            if not lines[i].lstrip().startswith("|"):
                i += 1
                continue
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            body = re.sub(r"`[^`]*`", "", "\n".join(lines[i + 2 : j]))
            above = lines[i - 1].strip() if i > 0 else ""
            if re.search(r"\d", body) and not STATIC.match(above):
                bad.append(start + i + 1)
            i = j
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="list blocks that differ; exit 1 if any")
    args = parser.parse_args(argv)
    cache: dict[str, Any] = {}
    stale: list[str] = []
    used: set[str] = set()
    for page in doc_pages():
        text = page.read_text()
        new, changed = render_page(text, ROOT, cache)
        used.update(k for k, _ in split_blocks(text) if k)
        rel = page.relative_to(ROOT)
        stale += [f"{rel}: generated:{k}" for k in changed]
        if changed and not args.check:
            page.write_text(new)
    unused = sorted(set(REGISTRY) - used)
    for key in unused:
        print(f"registry key {key} is used in no page", file=sys.stderr)
    if args.check:
        for s in stale:
            print(f"differs from its JSON: {s}")
        return 1 if stale or unused else 0
    for s in stale:
        print(f"rewrote {s}")
    return 1 if unused else 0


if __name__ == "__main__":
    sys.exit(main())
