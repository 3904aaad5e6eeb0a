import sys

from mke.cli import main

sys.exit(main())
