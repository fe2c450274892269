"""Parallel layouts: how a model is spread over processes (data parallel, pipeline stages).

Public modules (imported on use): :mod:`scidl.parallel.config` (the ``parallel.*`` settings),
:mod:`scidl.parallel.plan` (the device mesh and the plan the trainer holds),
:mod:`scidl.parallel.ddp` (data parallel), :mod:`scidl.parallel.pipeline` (pipeline stages
x data replicas) and
:mod:`scidl.parallel.blocks` (science CNNs as block sequences a pipeline can cut).
"""

__all__ = ["blocks", "config", "ddp", "pipeline", "plan"]
