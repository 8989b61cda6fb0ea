"""``python -m gscore.cli``: the same as the ``gscore`` console script."""

import sys

from gscore.cli import main

sys.exit(main())
