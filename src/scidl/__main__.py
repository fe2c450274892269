"""``python -m scidl`` = the ``scidl`` command (for torchrun / srun / mpirun)."""

import sys

from scidl.cli import main

sys.exit(main())
