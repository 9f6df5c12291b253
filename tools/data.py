#!/usr/bin/env python
"""``python tools/data.py ...`` from a clone is ``densemnv3 data ...`` after
``pip install``: the same ``main(argv)``, in :mod:`densemnv3.cli.data`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.cli.data import main  # noqa: E402
from densemnv3.cli.entry import run_main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    run_main(main)
