"""Train an SSDLite detector: ``densemnv3 train-det ssdlite_synthetic``.

Multi-GPU / multi-process: ``torchrun --nproc_per_node=N tools/train_det.py CONFIG``.
"""

from densemnv3.cli.commands import train_from_cli


def main(argv: list[str] | None = None) -> int:
    return train_from_cli("detection", __doc__, argv)
