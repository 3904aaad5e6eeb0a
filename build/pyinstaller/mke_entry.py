"""PyInstaller's entry script for dist/mke (build/bundle.py builds it; not imported by mke/)."""

import sys

from mke import pylib

pylib.install()  # packages left out of the one-file archive are staged on first import

from mke.cli import main

sys.exit(main())
