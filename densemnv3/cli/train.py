"""Train the model of any config: ``densemnv3 train multitask_synthetic``.

Segmentation, detection or the multi-task model, as the config's ``task`` says; the options are
``tools/train_seg.py``'s (``--set``, ``--work-dir``, ``--resume``, ``--device``, ``--no-progress``).
Multi-GPU / multi-process: ``torchrun --nproc_per_node=N tools/train.py CONFIG``.
"""

from densemnv3.cli.commands import train_from_cli


def main(argv: list[str] | None = None) -> int:
    return train_from_cli(None, __doc__, argv)
