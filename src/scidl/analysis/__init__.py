"""Model analysis: snapshot ensembles, autoencoder node saliency, Morse–Smale topology."""

from scidl.analysis.ensemble import SnapshotCollector, SnapshotEnsemble
from scidl.analysis.saliency import node_auc, saliency_report, sns
from scidl.analysis.topology import (
    CellSummary,
    MorseSmale,
    describe_cell,
    morse_smale,
    plot_morse_smale,
)

__all__ = [
    "CellSummary",
    "MorseSmale",
    "SnapshotCollector",
    "SnapshotEnsemble",
    "describe_cell",
    "morse_smale",
    "node_auc",
    "plot_morse_smale",
    "saliency_report",
    "sns",
]
