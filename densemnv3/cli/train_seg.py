"""Train an LR-ASPP segmentation model: ``densemnv3 train-seg lraspp_synthetic``.

Multi-GPU / multi-process: ``torchrun --nproc_per_node=N tools/train_seg.py CONFIG``.
"""

from densemnv3.cli.commands import train_from_cli


def main(argv: list[str] | None = None) -> int:
    return train_from_cli("segmentation", __doc__, argv)
