"""The data cases: decode + training augmentation of one sample, ours vs the torchvision
references' pipeline, both on one thread as a loader worker runs.

``data_seg``: a Cityscapes-style PNG + label through ``seg_train_transform`` vs a
torchvision-references-style PIL pipeline (random resize 0.5-2, pad, crop, flip, ColorJitter, to
tensor, normalise); ours reads the pair from the decoded-sample cache, and the same pipeline
decoding the PNGs is timed too (``ours_uncached``). ``data_det``: an image + boxes through
``det_train_transform`` vs torchvision references' SSDLite ``transforms.v2`` pipeline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .timing import time_interleaved, timed_record

DATA_CASES = ("data_seg", "data_det")


def bench_data(case: str, args) -> dict:
    """One training sample: decode + augmentation, ours vs torchvision-references style."""
    import cv2

    threads = torch.get_num_threads()
    cv2_threads = cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fns, size = (_seg_pipelines if case == "data_seg" else _det_pipelines)(
                Path(tmp), args.quick
            )
            seconds = time_interleaved(fns, args.iters, args.warmup, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    record = timed_record(case, size, 1, "uint8->fp32", seconds)
    record.update(ours_options={"threads": 1}, tv_options={"threads": 1})
    if "ours_uncached" in seconds:  # ours reads the decoded cache; the same pipeline decoding PNGs
        record["ours_options"]["decoded_cache"] = True
        record.update(
            ours_uncached_ms=seconds["ours_uncached"] * 1e3,
            ours_uncached_min_ms=seconds["ours_uncached_min"] * 1e3,
        )
    return record


def _seg_pipelines(root: Path, quick: bool):
    import random

    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision import transforms as T

    from densemnv3.data.cache import write_decoded_cache
    from densemnv3.data.cityscapes import CityscapesSegmentation
    from densemnv3.data.labels import ID_TO_TRAIN_ID
    from densemnv3.data.synthetic import make_synthetic
    from densemnv3.data.transforms import IMAGENET_MEAN, IMAGENET_STD, seg_train_transform

    full, crop = ((128, 256), (64, 128)) if quick else ((1024, 2048), (512, 1024))
    make_synthetic(root, train=2, val=1, size=full, progress=False)
    dataset = CityscapesSegmentation(root, "train", seg_train_transform(crop))
    cache = write_decoded_cache(dataset, root / "decoded", progress=False)
    cached = CityscapesSegmentation(root, "train", seg_train_transform(crop), decoded_cache=cache)
    jitter = T.ColorJitter(0.3, 0.3, 0.3, 0.05)
    lut = torch.as_tensor(ID_TO_TRAIN_ID.astype(np.int64))
    calls = iter(range(10**9))

    def pad(img, fill):
        pad_h, pad_w = max(crop[0] - img.size[1], 0), max(crop[1] - img.size[0], 0)
        return TF.pad(img, [0, 0, pad_w, pad_h], fill=fill) if pad_h or pad_w else img

    def reference():  # torchvision references/segmentation/transforms.py, composed as its presets
        image_path, label_path = dataset.samples[next(calls) % len(dataset)]
        image, target = Image.open(image_path).convert("RGB"), Image.open(label_path)
        short = random.randint(full[0] // 2, full[0] * 2)
        image = TF.resize(image, short)
        target = TF.resize(target, short, interpolation=T.InterpolationMode.NEAREST)
        image, target = pad(image, 0), pad(target, 255)
        box = T.RandomCrop.get_params(image, crop)
        image, target = TF.crop(image, *box), TF.crop(target, *box)
        if random.random() < 0.5:
            image, target = TF.hflip(image), TF.hflip(target)
        if random.random() < 0.5:
            image = jitter(image)
        image = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        target = torch.as_tensor(np.array(target), dtype=torch.int64)
        return image, torch.where(target == 255, target, lut[target])

    fns = {
        "ours": lambda: cached[next(calls) % len(cached)],
        "tv": reference,
        "ours_uncached": lambda: dataset[next(calls) % len(dataset)],
    }
    return fns, f"{full[0]}x{full[1]}->{crop[0]}x{crop[1]}"


def _det_pipelines(root: Path, quick: bool):
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from densemnv3.data.coco import CocoDetection
    from densemnv3.data.synthetic import make_synthetic
    from densemnv3.data.transforms import det_train_transform

    full, out = ((120, 160), 96) if quick else ((480, 640), 320)
    make_synthetic(root, train=2, val=1, size=full, progress=False)
    dataset = CocoDetection(
        root, root / "annotations" / "instances_train.json", det_train_transform(out)
    )
    raw = CocoDetection(root, root / "annotations" / "instances_train.json")
    pipeline = v2.Compose(
        [  # torchvision references/detection/presets.py, "ssdlite"
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: (127, 127, 127), "others": 0}),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(p=0.5),
            v2.Resize((out, out)),
            v2.SanitizeBoundingBoxes(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    targets = [raw[i][1] for i in range(len(raw))]  # boxes (xyxy pixels) and labels, decoded once
    calls = iter(range(10**9))

    def reference():
        index = next(calls) % len(raw)
        image = Image.open(raw.image_path(raw.ids[index])).convert("RGB")
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                targets[index]["boxes"], format="XYXY", canvas_size=(image.height, image.width)
            ),
            "labels": targets[index]["labels"],
        }
        return pipeline(image, target)

    return {
        "ours": lambda: dataset[next(calls) % len(dataset)],
        "tv": reference,
    }, f"{full[0]}x{full[1]}->{out}x{out}"
