"""The ``scidl`` subcommands, one module each, loaded by :mod:`scidl.cli`.

No public API: the command line is the interface (``scidl --help``); Python callers use
:func:`scidl.run` and the packages the commands call.
"""

__all__: list[str] = []
