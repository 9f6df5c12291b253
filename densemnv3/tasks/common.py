"""What the tasks share: the model named in the config, and the synthetic dataset."""

from __future__ import annotations

from pathlib import Path

from densemnv3.config import Config
from densemnv3.engine import distributed as dist_utils
from densemnv3.models.registry import build_model

__all__ = ["build_model", "ensure_synthetic"]


def ensure_synthetic(cfg: Config) -> None:
    """Generate the synthetic set at ``data.root`` on first use (rank 0; the others wait)."""
    spec = cfg.data.synthetic
    if spec is None:
        return
    from densemnv3.data.synthetic import make_synthetic, synthetic_exists

    root = Path(cfg.data.root)
    kwargs = dict(train=spec.train, val=spec.val, size=tuple(spec.size), seed=spec.seed)
    if dist_utils.is_main_process() and not synthetic_exists(root, **kwargs):
        print(f"generating the synthetic dataset at {root} (first use) ...", flush=True)
        make_synthetic(root, **kwargs)
    dist_utils.barrier()
