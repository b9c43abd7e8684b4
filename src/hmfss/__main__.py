"""``python -m hmfss``: the command line (same as the ``hmfss`` script)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
