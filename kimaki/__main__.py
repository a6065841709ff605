"""`python -m kimaki`."""

from __future__ import annotations

import sys

from kimaki.cli import main

if __name__ == "__main__":
    sys.exit(main())
