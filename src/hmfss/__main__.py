"""``python -m hmfss``: the command line (same as the ``hmfss`` script)."""

import sys

from hmfss.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
