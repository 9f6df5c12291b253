#!/usr/bin/env python
"""Train an LR-ASPP segmentation model: ``python tools/train_seg.py configs/lraspp_synthetic.py``.

Multi-GPU / multi-process: ``torchrun --nproc_per_node=N tools/train_seg.py CONFIG``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.commands import train_from_cli  # noqa: E402
from densemnv3.utils.cli import run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return train_from_cli("segmentation", __doc__, argv)


if __name__ == "__main__":
    run_main(main)
