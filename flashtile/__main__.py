"""``python -m flashtile`` (and the ``flashtile`` console script)."""

import sys

from flashtile.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
