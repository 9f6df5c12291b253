"""The synthetic Cityscapes + COCO generator: layout, label consistency, determinism, video."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from densemnv3.data.labels import ID_PALETTE, VALID_LABEL_IDS
from densemnv3.data.synthetic import (
    CITIES,
    MIN_AREA,
    THING_IDS,
    make_synthetic,
    make_synthetic_video,
    synthetic_exists,
    synthetic_video_frames,
)
from densemnv3.errors import UserError

# pycocotools' decode under NumPy 2 warns about __array__(copy=...); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ARGS = {"train": 4, "val": 2, "size": (64, 128), "seed": 0}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"), progress=False, **ARGS)


def _stems(split: str, count: int) -> list[tuple[str, str]]:
    cities = CITIES[split]
    return [
        (cities[i % len(cities)], f"{cities[i % len(cities)]}_000000_{i:06d}") for i in range(count)
    ]


def _label_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.glob("gtFine/*/*/*.png"))
        if p.name.endswith(("_labelIds.png", "_instanceIds.png"))
    }


def test_layout_is_exactly_cityscapes(dataset):
    expected = {".complete", "annotations/instances_train.json", "annotations/instances_val.json"}
    for split in ("train", "val"):
        for city, stem in _stems(split, ARGS[split]):
            expected.add(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
            for suffix in ("labelIds", "instanceIds", "color"):
                expected.add(f"gtFine/{split}/{city}/{stem}_gtFine_{suffix}.png")
    found = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    assert found == expected


def test_images_and_label_maps_are_consistent(dataset):
    for image_path in dataset.glob("leftImg8bit/*/*/*.png"):
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 128, 3) and image.dtype == np.uint8
        assert image.std() > 10  # a picture, not a flat fill
        stem = str(image_path).replace("leftImg8bit", "gtFine", 1).removesuffix("_leftImg8bit.png")
        labels = cv2.imread(stem + "_gtFine_labelIds.png", cv2.IMREAD_UNCHANGED)
        ids = cv2.imread(stem + "_gtFine_instanceIds.png", cv2.IMREAD_UNCHANGED)
        color = cv2.imread(stem + "_gtFine_color.png", cv2.IMREAD_COLOR)
        assert labels.dtype == np.uint8 and ids.dtype == np.uint16 and labels.shape == (64, 128)
        assert VALID_LABEL_IDS[labels].all() and labels.max() <= 33
        things = ids >= 1000
        assert np.array_equal(ids[things] // 1000, labels[things])
        assert np.array_equal(ids[~things], labels[~things])
        assert np.isin(np.unique(ids[things]) // 1000, list(THING_IDS.values())).all()
        assert np.array_equal(color[:, :, ::-1], ID_PALETTE[labels])
        assert 7 in labels  # every street has a road


def test_coco_annotations_match_instance_ids(dataset):
    total = 0
    for split in ("train", "val"):
        data = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == [24, 25, 26, 27, 28, 31, 32, 33]
        assert {c["name"]: c["id"] for c in data["categories"]} == THING_IDS
        assert [img["id"] for img in data["images"]] == list(range(1, ARGS[split] + 1))
        assert [a["id"] for a in data["annotations"]] == list(
            range(1, len(data["annotations"]) + 1)
        )
        by_image = {img["id"]: img for img in data["images"]}
        seen = {img_id: set() for img_id in by_image}
        for ann in data["annotations"]:
            image = by_image[ann["image_id"]]
            assert (image["height"], image["width"]) == (64, 128)
            ids_path = dataset / image["file_name"].replace("leftImg8bit", "gtFine", 1).replace(
                "_leftImg8bit.png", "_gtFine_instanceIds.png"
            )
            ids = cv2.imread(str(ids_path), cv2.IMREAD_UNCHANGED)
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            codes = np.unique(ids[mask])
            assert len(codes) == 1 and codes[0] // 1000 == ann["category_id"]
            assert np.array_equal(
                mask, ids == codes[0]
            )  # the annotation is the whole visible instance
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            assert ann["area"] == mask.sum() >= MIN_AREA
            assert ann["iscrowd"] == 0 and ann["category_id"] in THING_IDS.values()
            seen[image["id"]].add(int(codes[0]))
            total += 1
        for img_id, image in by_image.items():  # and every instance has its annotation
            assert (dataset / image["file_name"]).is_file()
            ids_path = dataset / image["file_name"].replace("leftImg8bit", "gtFine", 1).replace(
                "_leftImg8bit.png", "_gtFine_instanceIds.png"
            )
            ids = cv2.imread(str(ids_path), cv2.IMREAD_UNCHANGED)
            assert set(np.unique(ids[ids >= 1000]).tolist()) == seen[img_id]
    assert total > 0


def test_pycocotools_loads_the_annotations(dataset):
    coco = COCO(str(dataset / "annotations" / "instances_train.json"))
    assert sorted(coco.getCatIds()) == sorted(THING_IDS.values())
    assert len(coco.getImgIds()) == ARGS["train"]
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert coco.annToMask(ann).sum() == ann["area"]


def test_same_seed_same_labels_whatever_the_workers(dataset, tmp_path):
    again = make_synthetic(tmp_path / "again", progress=False, workers=2, **ARGS)
    assert _label_files(again) == _label_files(dataset)
    other = make_synthetic(tmp_path / "other", progress=False, **{**ARGS, "seed": 1})
    mine, theirs = _label_files(dataset), _label_files(other)
    assert mine.keys() == theirs.keys()
    assert all(mine[name] != theirs[name] for name in mine)


def test_marker_and_rebuild(dataset, tmp_path):
    marker = json.loads((dataset / ".complete").read_text())
    assert marker["train"] == 4 and marker["val"] == 2 and marker["size"] == [64, 128]
    assert synthetic_exists(dataset, **ARGS)
    assert not synthetic_exists(dataset, **{**ARGS, "seed": 1})
    assert not synthetic_exists(dataset, **{**ARGS, "train": 5})
    assert not synthetic_exists(tmp_path / "missing", **ARGS)

    out = make_synthetic(tmp_path / "small", train=3, val=1, size=(32, 64), progress=False)
    make_synthetic(out, train=1, val=1, size=(32, 64), progress=False)  # a rebuild drops old files
    assert len(list(out.glob("leftImg8bit/*/*/*.png"))) == 2
    assert (
        synthetic_exists(out, train=1, val=1, size=(32, 64)) and not (out / ".in_progress").exists()
    )
    (out / ".complete").unlink()  # as if interrupted
    assert not synthetic_exists(out, train=1, val=1, size=(32, 64))


def test_refuses_foreign_directory_and_bad_arguments(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        make_synthetic(tmp_path, train=1, val=1, size=(32, 64), progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="size"):
        make_synthetic(tmp_path / "a", train=1, val=1, size=(8, 8), progress=False)
    with pytest.raises(UserError, match="train"):
        make_synthetic(tmp_path / "b", train=-1, progress=False)


@pytest.mark.parametrize("name", ["drive.mp4", "drive.avi"])
def test_video_has_the_requested_frames(tmp_path, name):
    path = make_synthetic_video(tmp_path / name, frames=12, size=(64, 128), fps=5.0)
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    assert len(frames) == 12 and all(f.shape == (64, 128, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 3  # the camera moves
    with pytest.raises(UserError, match="extension"):
        make_synthetic_video(tmp_path / "drive.gif", frames=2, size=(64, 128))


def test_cli_writes_a_summary_and_reports_errors(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "make_synthetic.py")]
    done = subprocess.run(
        [*tool, "--out", str(tmp_path / "s"), "--train", "2", "--val", "1", "--size", "32", "64"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "train: 2 images" in done.stdout and "val: 1 images" in done.stdout
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    failed = subprocess.run(
        [*tool, "--out", str(tmp_path / "taken")], capture_output=True, text=True, check=False
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: ") and len(failed.stderr.strip().splitlines()) == 1


def _digest(root: Path, videos: dict[str, dict]) -> str:
    """One digest over what the generator drew, not over how a codec stored it.

    Every file below ``root`` by sorted relative path: PNGs by their decoded pixels (lossless, so a
    libpng/zlib change in an OpenCV build cannot move it, but one changed pixel does), JSON by its
    bytes (written by ``json`` alone). Then each video's frames as they go into the encoder.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        if path.suffix == ".png":
            pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            digest.update(f"{pixels.dtype}{pixels.shape}".encode() + pixels.tobytes())
        else:
            digest.update(path.read_bytes())
    for name, args in videos.items():
        digest.update(name.encode() + b"\0")
        for frame in synthetic_video_frames(**args):
            digest.update(frame.tobytes())
    return digest.hexdigest()


#: The two videos of the reference: (MJPG .avi, mp4v .mp4) with their arguments.
VIDEOS = {
    "drive.avi": {"frames": 8, "size": (64, 96), "fps": 4.0, "seed": 3},
    "drive.mp4": {"frames": 5, "size": (48, 80), "fps": 10.0, "seed": 1},
}


DRAWING_DIGEST = "02b35567baddd582fa7a80c8690d03aaa3afae396b4d36d43a4e0398fb0c8c3e"


def test_drawing_is_identical_to_the_reference(tmp_path):
    make_synthetic(tmp_path / "a", train=6, val=3, size=(64, 128), seed=0, progress=False)
    make_synthetic(tmp_path / "b", train=3, val=2, size=(96, 160), seed=1, progress=False)
    # The pixels the generator draws, as written (PNGs decoded) and as handed to the video encoder:
    # an OpenCV build with other PNG, MJPG or mp4v encoders cannot change it, a drawing change
    # does. Taken with the drawing of commit 01b6f79 (opencv-python-headless 5.0.0.93 and 5.1.0.95
    # agree). Seed 1 of set b draws riders seen from the side, so every drawing function runs. A
    # change that alters the drawing must bump _VERSION and this digest together.
    assert _digest(tmp_path, VIDEOS) == DRAWING_DIGEST


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.mark.parametrize("name", VIDEOS)
def test_video_file_holds_the_drawn_frames(tmp_path, name):
    """The encoded file decodes to the frames digested above, within what a lossy codec loses.

    MJPG and mp4v keep ~30 dB here, a neighbouring frame of the drive is at ~18 dB: a codec
    change keeps the first above 24 dB, a wrong or shifted frame fails it.
    """
    path = make_synthetic_video(tmp_path / name, **VIDEOS[name])
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while (frame := capture.read()[1]) is not None:
        decoded.append(frame)
    capture.release()
    drawn = list(synthetic_video_frames(**VIDEOS[name]))
    assert len(decoded) == len(drawn)
    for k, got in enumerate(decoded):
        assert _psnr(got, drawn[k]) > 24
        if k + 1 < len(drawn):
            assert _psnr(got, drawn[k + 1]) < 24
