"""``python -m kvrt``: the same as the ``kvrt`` command."""

import sys

from kvrt.cli import main

sys.exit(main())
