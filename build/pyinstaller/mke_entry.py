"""PyInstaller's entry script for dist/mke (build/bundle.py builds it; not imported by mke/)."""

import sys

from mke.cli import main

sys.exit(main())
