"""``train.deterministic=True``: the same run twice gives bit-identical weights, on CPU and CUDA.

:func:`enable_determinism` turns PyTorch's deterministic algorithms on (and, for cuBLAS,
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set, which must happen before the first cuBLAS
call). The ops of the LR-ASPP and SSDLite training steps that have no deterministic CUDA kernel
are routed around where they are used: the segmentation cross entropy
(:func:`densemnv3.models.losses.cross_entropy_2d`) and the bilinear upsampling
(:func:`densemnv3.models.resize.resize_bilinear`). Any other op that PyTorch refuses in this mode
(a custom model's, say) stops the run with one message naming it
(:func:`nondeterministic_op_is_a_user_error`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from densemnv3.errors import UserError

__all__ = ["CUBLAS_WORKSPACE", "enable_determinism", "nondeterministic_op_is_a_user_error"]

CUBLAS_WORKSPACE = ":4096:8"
_REFUSALS = ("does not have a deterministic implementation", "Deterministic behavior was enabled")


def enable_determinism(device: torch.device) -> None:
    """Deterministic algorithms everywhere, no cuDNN autotuning; on CUDA a deterministic cuBLAS
    workspace (``CUBLAS_WORKSPACE_CONFIG``; a value the user set is kept)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


@contextmanager
def nondeterministic_op_is_a_user_error(
    enabled: bool, error: type[UserError] = UserError
) -> Iterator[None]:
    """Turn PyTorch's refusal of an op without a deterministic kernel into one ``error`` that
    names the op and the way out (when ``enabled``: ``train.deterministic`` is on)."""
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if not enabled or not any(refusal in text for refusal in _REFUSALS):
            raise
        if "CuBLAS" in text or "CUBLAS" in text:
            what = (
                f"cuBLAS needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} (or :16:8) set before "
                f"CUDA starts; it is {os.environ.get('CUBLAS_WORKSPACE_CONFIG')!r}"
            )
        else:
            what = (
                f"{text.split(' does not have', 1)[0].strip()} has no deterministic kernel on "
                f"this device"
            )
        raise error(
            f"train.deterministic=True: {what}; set train.deterministic=False to train "
            f"without bit-exact reproducibility"
        ) from None
