"""Label-noise study on scikit-learn digits: binary, multiclass and multilabel tasks.

Docs: ``docs/workloads/noisy_labels.md``.
"""

from scidl.workloads.noisy_labels.workload import NoisyLabels, NoisyLabelsConfig

__all__ = ["NoisyLabels", "NoisyLabelsConfig"]
