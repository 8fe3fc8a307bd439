"""``python -m rovr``: the same command line as ``rovr``."""

import sys

from rovr.cli import main

if __name__ == "__main__":
    sys.exit(main())
