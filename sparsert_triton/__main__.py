"""``python -m sparsert_triton``: the ``sparsert`` command line (see :mod:`sparsert_triton.cli`)."""
import sys

from .cli import main

sys.exit(main())
