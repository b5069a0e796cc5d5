"""`python -m dlops ...`: the `dlops` command."""

import sys

from dlops.cli import main

if __name__ == "__main__":
    sys.exit(main())
