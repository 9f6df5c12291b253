"""The blocked running-maximum label map equals ``argmax(1)``, ties and all."""

import numpy as np
import pytest
import torch

from densemnv3.inference.argmax import BLOCK_ROWS, label_map


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 19, 72, 128), (2, 5, 2 * BLOCK_ROWS + 3, 33), (1, 1, 4, 4)])
def test_equals_argmax(shape, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        scores = torch.randn(shape, generator=g)
        ties = torch.randint(0, 3, shape, generator=g).float()  # many equal maxima: first wins
        for logits in (scores, ties):
            labels = label_map(logits)
            assert labels.dtype == np.uint8 and labels.shape == (shape[0], *shape[2:])
            assert np.array_equal(labels, logits.argmax(1).numpy())
    finally:
        torch.set_num_threads(previous)


def test_other_layouts_and_types_fall_back_to_argmax():
    logits = torch.randn(1, 7, 20, 30)
    for other in (
        logits.contiguous(memory_format=torch.channels_last),
        logits.half(),
        logits[..., ::2],
    ):
        assert np.array_equal(label_map(other), other.argmax(1).numpy())
    with pytest.raises(ValueError, match="expected"):
        label_map(torch.zeros(7, 20, 30))
