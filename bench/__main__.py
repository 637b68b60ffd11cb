"""``python -m bench``: the benchmark (or, without a GPU, the CPU demo)."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
