"""Per-label GANs on separate ranks vs one conditional GAN with the same budget.

    scidl study cgan_per_label --nproc 2 --steps 300

Prints, for both variants, the sample-quality metrics (inception-style score, Fréchet
distance, label accuracy, pixel std) and the training seconds as JSON
(``docs/workloads/cgan_per_label.md``).
"""

from __future__ import annotations

import argparse
import json

from scidl.workloads.cgan_per_label.data import load_images
from scidl.workloads.cgan_per_label.dist import PerLabelRunConfig, run_per_label, train_conditional
from scidl.workloads.cgan_per_label.metrics import sample, sample_metrics, train_classifier


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``scidl study cgan_per_label``."""
    ap.add_argument("--nproc", type=int, default=2, help="gloo processes of the per-label run")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per label pair")
    ap.add_argument("--seed", type=int, default=0)


def run(a: argparse.Namespace) -> int:
    """Train both variants and print their metrics."""
    spec = PerLabelRunConfig(steps=a.steps, seed=a.seed)
    res = run_per_label(spec, a.nproc)
    cond, cond_s = train_conditional(spec)
    Xtr, ytr, Xte, _ = load_images(spec.seed, spec.model.test_fraction, spec.model.labels)
    clf = train_classifier(Xtr, ytr, spec.seed, spec.model.classifier_steps)
    rows = {}
    for name, model in (("per_label", res.generators), ("conditional", cond)):
        imgs = sample(model, spec.model.labels, spec.model.eval_per_label, spec.model.z_dim, 1)
        rows[name] = sample_metrics(imgs, spec.model.labels, clf, Xte)
    rows["per_label"]["train_s"] = res.train_s
    rows["conditional"]["train_s"] = cond_s
    print(json.dumps(rows, indent=2))
    return 0
