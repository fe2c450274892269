"""Bridges from other training frameworks' model classes to a SciDL :class:`~scidl.Task`.

* :mod:`scidl.adapters.lightning` — a Lightning ``LightningModule`` (its
  ``training_step`` and ``validation_step``) trained by SciDL's engine.
"""

__all__: list[str] = []
