"""A virtual cluster on one machine: network namespaces joined by shaped links.

``scidl cluster up|down|status|exec`` (:mod:`scidl.commands.cluster`) and
``scidl train ... --cluster NAME`` (:mod:`scidl.cluster.launch`) use it; see
docs/cluster.md. Nothing is imported or created at import time.
"""

from scidl.cluster.net import ClusterError, down, load, status_lines, up
from scidl.cluster.spec import ClusterSpec, SpecError, parse_rate

__all__ = ["ClusterError", "ClusterSpec", "SpecError", "down", "load", "parse_rate", "status_lines", "up"]
