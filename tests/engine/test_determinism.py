"""train.deterministic on CUDA, checked on CPU: the deterministic loss and resize equal the ops they
replace, and the LR-ASPP and SSDLite training steps then use no op that CUDA refuses in
deterministic mode (the GPU run itself is tests/gpu/test_cuda.py)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from densemnv3 import models
from densemnv3.engine.determinism import nondeterministic_op_is_a_user_error
from densemnv3.engine.trainer import TrainingError
from densemnv3.models import losses, resize
from densemnv3.models.losses import (
    cross_entropy_2d,
    deterministic_cross_entropy,
    ohem_cross_entropy,
)
from densemnv3.models.resize import resize_bilinear_matmul

#: aten ops whose CUDA kernels raise under torch.use_deterministic_algorithms(True) (the torch
#: docs' list, as op names), among those a dense-prediction training step could reach.
CUDA_REFUSED = {
    "nll_loss2d_forward",
    "upsample_bilinear2d_backward",
    "upsample_linear1d_backward",
    "upsample_bicubic2d_backward",
    "upsample_trilinear3d_backward",
    "_upsample_bilinear2d_aa_backward",
    "_adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_backward",
    "avg_pool3d_backward",
    "reflection_pad1d_backward",
    "reflection_pad2d_backward",
    "grid_sampler_2d_backward",
    "fractional_max_pool2d_backward",
    "max_unpool2d",
    "histc",
    "put_",
    "median",
    "_ctc_loss_backward",
    "_embedding_bag_backward",
    "scatter_reduce",
}


class OpNames(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def cuda_deterministic_paths(monkeypatch):
    """The paths the model and the loss take on CUDA in deterministic mode, taken on CPU."""
    monkeypatch.setattr(resize, "deterministic_cuda", lambda x: True)
    monkeypatch.setattr(losses, "deterministic_cuda", lambda x: True)  # cross_entropy_2d's module


def test_deterministic_cross_entropy_equals_cross_entropy_with_ignore_index():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 19, 24, 40, generator=gen) * 4).requires_grad_()
    target = torch.randint(0, 19, (2, 24, 40), generator=gen)
    target[0, :10] = 255
    target[1, :, :7] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    got = deterministic_cross_entropy(logits, target, 255)
    (got_grad,) = torch.autograd.grad(got, logits)
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert torch.allclose(got_grad, expected_grad, rtol=1e-5, atol=1e-9)
    assert (
        cross_entropy_2d(logits, target, 255).item() == expected.item()
    )  # CPU: F.cross_entropy itself


def test_deterministic_cross_entropy_in_fp16_is_computed_in_fp32():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 5, 8, 8, generator=gen)
    target = torch.randint(0, 5, (1, 8, 8), generator=gen)
    got = deterministic_cross_entropy(logits.half(), target, 255)
    assert got.dtype == torch.float32
    assert torch.allclose(
        got, F.cross_entropy(logits.half().float(), target, ignore_index=255), rtol=1e-6
    )


@pytest.mark.parametrize(
    "size_in, size_out",
    [((8, 16), (64, 128)), ((7, 9), (30, 41)), ((12, 20), (5, 7)), ((1, 1), (4, 6))],
)
def test_matmul_resize_equals_bilinear_interpolate_values_and_gradients(size_in, size_out):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *size_in, generator=gen, requires_grad=True)
    weight = torch.randn(2, 3, *size_out, generator=gen)
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), x)
    got = resize_bilinear_matmul(x, size_out)
    (got_grad,) = torch.autograd.grad((got * weight).sum(), x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got_grad, expected_grad, atol=1e-4)


def _seg_step():
    torch.manual_seed(0)
    model = models.lraspp_mobilenet_v3_small(num_classes=19).train()
    x = torch.randn(2, 3, 64, 96)
    target = torch.randint(0, 19, (2, 64, 96))
    target[0, :5] = 255
    cross_entropy_2d(model(x), target, 255).backward()


def _ohem_step():
    torch.manual_seed(0)
    model = models.lraspp_mobilenet_v3_small(num_classes=19).train()
    target = torch.randint(0, 19, (2, 64, 96))
    ohem_cross_entropy(
        model(torch.randn(2, 3, 64, 96)), target, thresh=0.7, min_kept=1000
    ).backward()


def _det_step():
    torch.manual_seed(0)
    model = models.ssdlite320_mobilenet_v3_small(num_classes=4).train()
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 60, 60], [30, 40, 100, 120]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[0.0, 0, 50, 80]]), "labels": torch.tensor([3])},
    ]
    sum(model(torch.randn(2, 3, 128, 128), targets).values()).backward()


def test_plain_lraspp_step_uses_ops_that_cuda_refuses(monkeypatch):
    """The inventory sees them: without the deterministic paths the LR-ASPP step would stop."""
    monkeypatch.setattr(resize, "CPU_MATMUL_MAX_CELLS", 0)  # CUDA's path: the interpolate kernel
    with OpNames() as ops:
        _seg_step()
    assert {"nll_loss2d_forward", "upsample_bilinear2d_backward"} <= ops.names


@pytest.mark.parametrize(
    "step", [_seg_step, _ohem_step, _det_step], ids=["lraspp", "lraspp-ohem", "ssdlite"]
)
def test_training_step_avoids_ops_cuda_refuses_in_deterministic_mode(
    step, cuda_deterministic_paths
):
    with OpNames() as ops:
        step()
    assert "convolution_backward" in ops.names  # the inventory saw the backward pass
    assert not ops.names & CUDA_REFUSED


def test_a_refused_op_is_one_training_error_naming_it():
    refusal = RuntimeError(
        "upsample_bicubic2d_backward_out_cuda does not have a deterministic implementation, "
        "but you set 'torch.use_deterministic_algorithms(True)'. ..."
    )
    with pytest.raises(
        TrainingError,
        match=r"train.deterministic=True: upsample_bicubic2d_backward_out_cuda "
        r"has no deterministic kernel .* set train.deterministic=False",
    ):
        with nondeterministic_op_is_a_user_error(True, TrainingError):
            raise refusal
    with pytest.raises(RuntimeError, match="does not have"):  # off: the error as PyTorch raised it
        with nondeterministic_op_is_a_user_error(False, TrainingError):
            raise refusal
    with pytest.raises(RuntimeError, match="out of memory"):  # other errors pass through
        with nondeterministic_op_is_a_user_error(True, TrainingError):
            raise RuntimeError("CUDA out of memory")
