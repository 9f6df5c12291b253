"""Which path ``resize_bilinear`` takes: the matrix products only with gradients on small CPU inputs
(where they are faster), ``F.interpolate`` itself everywhere else; both give its values."""

import torch
import torch.nn.functional as F

from densemnv3.models.resize import CPU_MATMUL_MAX_CELLS, resize_bilinear


def _resize(size_in, size_out, grad):
    x = (
        torch.randn(2, 19, *size_in, generator=torch.Generator().manual_seed(0))
        .contiguous(memory_format=torch.channels_last)
        .requires_grad_(grad)
    )
    return x, resize_bilinear(x, size_out)


def test_small_cpu_inputs_with_gradients_resize_by_matrix_products():
    assert 16 * 32 <= CPU_MATMUL_MAX_CELLS < 64 * 128
    x, y = _resize((16, 32), (128, 256), grad=True)
    assert "Upsample" not in type(y.grad_fn).__name__
    torch.testing.assert_close(
        y,
        F.interpolate(x, size=(128, 256), mode="bilinear", align_corners=False),
        atol=1e-5,
        rtol=0,
    )


def test_large_inputs_and_inference_use_the_interpolate_kernel():
    _, y = _resize((64, 128), (512, 1024), grad=True)
    assert type(y.grad_fn).__name__.startswith("UpsampleBilinear2D")
    x, y = _resize((16, 32), (128, 256), grad=False)
    assert torch.equal(y, F.interpolate(x, size=(128, 256), mode="bilinear", align_corners=False))
    with torch.no_grad():
        x, y = _resize((16, 32), (128, 256), grad=True)
    assert y.grad_fn is None
