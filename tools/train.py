#!/usr/bin/env python
"""Train the model of any config: ``python tools/train.py configs/multitask_synthetic.py``.

Segmentation, detection or the multi-task model, as the config's ``task`` says; the options are
``tools/train_seg.py``'s (``--set``, ``--work-dir``, ``--resume``, ``--device``,
``--no-progress``). Multi-GPU / multi-process: ``torchrun --nproc_per_node=N tools/train.py CONFIG``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.commands import train_from_cli  # noqa: E402
from densemnv3.utils.cli import run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return train_from_cli(None, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
