"""``python -m benchlib`` is the ``benchlib`` command."""
from __future__ import annotations

import sys

from benchlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
