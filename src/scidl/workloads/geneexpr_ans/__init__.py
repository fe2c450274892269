"""Gene-expression autoencoder with node saliency (Fan et al. 2018, arXiv 1901.11152).

Docs: ``docs/workloads/geneexpr_ans.md``.
"""

from scidl.workloads.geneexpr_ans.workload import GeneExprANS, GeneExprConfig

__all__ = ["GeneExprANS", "GeneExprConfig"]
