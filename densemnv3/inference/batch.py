"""Predictions for many images: decoded by a pool of threads ahead of the network, run a batch
at a time, given back in order with the files that could not be read and the time of each stage.

:func:`predict_files` is what ``densemnv3 predict`` and :meth:`Predictor.predict_files
<densemnv3.inference.Predictor.predict_files>` are made of. The decoders (OpenCV releases the
GIL) stay up to ``2 * batch_size + workers`` images ahead, so memory is bounded however long the
list; the images of a batch that share a size run as one network batch (on the CPU, in slices
side by side, see :meth:`Predictor.__call__ <densemnv3.inference.Predictor.__call__>`).
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from densemnv3.data.io import MAX_IMAGE_PIXELS, read_frame
from densemnv3.errors import DataError

__all__ = ["Prediction", "predict_files"]

_END = object()


@dataclass
class Prediction:
    """One image's prediction: ``path`` (or the key of a frame given decoded), the ``frame``
    (BGR, as decoded), the ``result`` (as :class:`Predictor` gives it), or ``error`` (why the
    file could not be read; ``frame`` and ``result`` are None then). ``decode_ms``: its decode;
    ``network_ms``: its share of its batch's network (and label maps / boxes)."""

    path: Any
    frame: np.ndarray | None = None
    result: Any = None
    error: str | None = None
    decode_ms: float = 0.0
    network_ms: float = 0.0


def predict_files(
    predictor: Callable[..., list],
    items: Iterable[Any],
    *,
    batch_size: int = 1,
    workers: int = 2,
    strict: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
    **call_kwargs: Any,
) -> Iterator[Prediction]:
    """A :class:`Prediction` for each of ``items``, in order, from ``predictor`` (a
    :class:`~densemnv3.inference.Predictor`, or any callable taking a list of BGR frames).

    An item is an image file's path, or a ``(key, frame)`` pair of an image already decoded
    (a video's frames). A file that cannot be read (missing, empty, truncated, not an image,
    declaring over ``max_pixels``) gives a :class:`Prediction` with ``error`` set, or with
    ``strict`` raises :class:`~densemnv3.errors.DataError` naming it. ``call_kwargs`` go to the
    predictor (``probabilities``, ``score_threshold``).
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    window = 2 * batch_size + workers
    with ThreadPoolExecutor(workers, thread_name_prefix="densemnv3-decode") as pool:
        pending: collections.deque[tuple[Any, Future]] = collections.deque()
        source = iter(items)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < window:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                    break
                pending.append((item, pool.submit(_decode, item, max_pixels)))
            chunk = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            if chunk:
                yield from _predict_chunk(predictor, chunk, strict, call_kwargs)


def _decode(item: Any, max_pixels: int) -> tuple[np.ndarray | None, str | None, float]:
    """(frame, None, ms) of an item, or (None, why it cannot be read, ms)."""
    if isinstance(item, tuple):
        return item[1], None, 0.0
    start = time.perf_counter()
    try:
        frame = read_frame(item, max_pixels=max_pixels, hint="")  # listed, not a stop
    except DataError as err:
        reason = str(err)
        prefix = f"{os.fspath(item)}: "
        return None, reason[len(prefix) :] if reason.startswith(prefix) else reason, 0.0
    except OSError as err:  # unreadable: permissions, a folder named like an image, I/O
        return None, f"cannot read ({err.strerror or err})", 0.0
    return frame, None, 1000 * (time.perf_counter() - start)


def _predict_chunk(
    predictor: Callable[..., list], chunk: list, strict: bool, call_kwargs: dict
) -> Iterator[Prediction]:
    done = []
    for item, future in chunk:
        frame, error, ms = future.result()
        path = item[0] if isinstance(item, tuple) else item
        if error is not None and strict:
            raise DataError(f"{os.fspath(path)}: {error}")
        done.append(Prediction(path, frame, error=error, decode_ms=ms))
    good = [p for p in done if p.error is None]
    if good:
        start = time.perf_counter()
        results = predictor([p.frame for p in good], **call_kwargs)
        share = 1000 * (time.perf_counter() - start) / len(good)
        for prediction, result in zip(good, results):
            prediction.result, prediction.network_ms = result, share
    yield from done
