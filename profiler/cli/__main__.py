"""``python -m profiler.cli``: the ``prof`` command."""

import sys

from profiler.cli import main

sys.exit(main())
