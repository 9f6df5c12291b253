from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.data.cityscapes import CityscapesSegmentation
from densemnv3.data.io import read_image, read_label
from densemnv3.data.transforms import IMAGENET_MEAN, IMAGENET_STD, seg_eval_transform
from densemnv3.errors import DataError

H, W = 32, 64


def quadrant_label(ids=(7, 26, 0, 9)) -> np.ndarray:
    """Label ids in the four quadrants: top-left, top-right, bottom-left, bottom-right."""
    label = np.empty((H, W), np.uint8)
    label[: H // 2, : W // 2], label[: H // 2, W // 2 :] = ids[0], ids[1]
    label[H // 2 :, : W // 2], label[H // 2 :, W // 2 :] = ids[2], ids[3]
    return label


def write_pair(root: Path, stem: str, image: np.ndarray, label: np.ndarray, split="train"):
    """Write an RGB image and its label ids in the Cityscapes layout; return both paths."""
    city = stem.split("_")[0]
    image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    label_path = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(label_path), label)
    return image_path, label_path


def rgb_image(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- decoding ---------------------------------------------------------------------------------


def test_read_image_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(H * W, dtype=np.uint32).reshape(H, W).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    image = read_image(tmp_path / "g.png")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_read_image_rgba_drops_alpha_and_returns_rgb(tmp_path):
    bgra = np.zeros((H, W, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 40  # B, G, R, A
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    image = read_image(tmp_path / "a.png")
    assert image.shape == (H, W, 3)
    assert image[0, 0].tolist() == [30, 20, 10]


def test_read_image_16bit_is_scaled_to_8bit(tmp_path):
    deep = np.full((H, W, 3), 65535, np.uint16)
    deep[0, 0] = (0, 257 * 100, 257 * 200)  # B, G, R
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    image = read_image(tmp_path / "d.png")
    assert image.dtype == np.uint8
    assert image[0, 0].tolist() == [200, 100, 0] and image[1, 1].tolist() == [255, 255, 255]


def test_read_image_truncated_and_missing_have_distinct_messages(tmp_path):
    path = tmp_path / "t.png"
    cv2.imwrite(str(path), rgb_image())
    truncate(path)
    with pytest.raises(DataError, match="cannot decode image") as info:
        read_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="no such file") as info:
        read_image(tmp_path / "missing.png")
    assert "missing.png" in str(info.value)


def test_read_label_rejects_color_images(tmp_path):
    cv2.imwrite(str(tmp_path / "c.png"), rgb_image())
    with pytest.raises(DataError, match="single-channel 8-bit.*3-channel uint8") as info:
        read_label(tmp_path / "c.png")
    assert "c.png" in str(info.value)
    cv2.imwrite(str(tmp_path / "l.png"), quadrant_label())
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), quadrant_label())


# --- dataset ----------------------------------------------------------------------------------


def test_label_ids_map_to_train_ids(tmp_path):
    image = rgb_image()
    write_pair(tmp_path, "aachen_000000_000019", image, quadrant_label((7, 26, 0, 9)))
    dataset = CityscapesSegmentation(tmp_path, "train")
    assert len(dataset) == 1 and dataset.sample_id(0) == "aachen_000000_000019"
    raw_image, target = dataset[0]
    np.testing.assert_array_equal(raw_image, image)
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target, quadrant_label((0, 13, 255, 255)))

    dataset.transform = seg_eval_transform()
    tensor, target = dataset[0]
    assert tensor.dtype == torch.float32 and tensor.shape == (3, H, W)
    assert target.dtype == torch.int64
    np.testing.assert_array_equal(target.numpy(), quadrant_label((0, 13, 255, 255)))
    expected = (image[0, 0] / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), expected, atol=1e-5)


def test_samples_are_sorted_and_paired(tmp_path):
    for stem in ("zurich_000001_000019", "aachen_000002_000019", "aachen_000001_000019"):
        write_pair(tmp_path, stem, rgb_image(), quadrant_label())
    dataset = CityscapesSegmentation(tmp_path, "train")
    ids = [dataset.sample_id(i) for i in range(len(dataset))]
    assert ids == ["aachen_000001_000019", "aachen_000002_000019", "zurich_000001_000019"]
    image_path, label_path = dataset.samples[2]
    assert image_path.endswith("leftImg8bit/train/zurich/zurich_000001_000019_leftImg8bit.png")
    assert label_path.endswith("gtFine/train/zurich/zurich_000001_000019_gtFine_labelIds.png")


def test_invalid_label_id_names_file_and_ids(tmp_path):
    _, label_path = write_pair(
        tmp_path, "a_000000_000000", rgb_image(), quadrant_label((7, 34, 200, 7))
    )
    dataset = CityscapesSegmentation(tmp_path, "train")
    with pytest.raises(DataError, match=r"label ids \[34, 200\]") as info:
        dataset[0]
    assert str(label_path) in str(info.value)


def test_label_size_mismatch_names_both_sizes(tmp_path):
    image_path, label_path = write_pair(tmp_path, "a_000000_000000", rgb_image(), quadrant_label())
    cv2.imwrite(str(label_path), np.full((16, 48), 7, np.uint8))
    with pytest.raises(DataError, match="48x16.*64x32") as info:
        CityscapesSegmentation(tmp_path, "train")[0]
    assert str(label_path) in str(info.value) and str(image_path) in str(info.value)


def test_truncated_image_names_file(tmp_path):
    image_path, _ = write_pair(tmp_path, "a_000000_000000", rgb_image(), quadrant_label())
    truncate(image_path)
    with pytest.raises(DataError, match="cannot decode image") as info:
        CityscapesSegmentation(tmp_path, "train")[0]
    assert str(image_path) in str(info.value)


def test_missing_root_says_how_to_fix(tmp_path):
    with pytest.raises(DataError) as info:
        CityscapesSegmentation(tmp_path / "nowhere", "train")
    message = str(info.value)
    assert "nowhere" in message and "data.root=" in message and "make_synthetic" in message


def test_layout_errors(tmp_path):
    write_pair(tmp_path, "a_000000_000000", rgb_image(), quadrant_label(), split="train")
    with pytest.raises(DataError, match="leftImg8bit/val: split folder not found"):
        CityscapesSegmentation(tmp_path, "val")
    (tmp_path / "leftImg8bit" / "test").mkdir()
    with pytest.raises(DataError, match="no \\*_leftImg8bit.png images"):
        CityscapesSegmentation(tmp_path, "test")
    _, label_path = write_pair(tmp_path, "b_000000_000000", rgb_image(), quadrant_label())
    label_path.unlink()
    with pytest.raises(DataError, match="image without a mask") as info:
        CityscapesSegmentation(tmp_path, "train")
    assert str(label_path) in str(info.value)
    image_path, label_path = write_pair(tmp_path, "b_000000_000000", rgb_image(), quadrant_label())
    image_path.unlink()
    with pytest.raises(DataError, match="mask without an image") as info:
        CityscapesSegmentation(tmp_path, "train")
    assert str(label_path) in str(info.value) and str(image_path) in str(info.value)


def test_a_bad_sample_is_never_replaced_and_validate_drops_it(tmp_path):
    bad_path, _ = write_pair(tmp_path, "a_000000_000000", rgb_image(0), quadrant_label())
    good_image = rgb_image(1)
    write_pair(tmp_path, "a_000000_000001", good_image, quadrant_label((8, 8, 8, 8)))
    truncate(bad_path)

    dataset = CityscapesSegmentation(tmp_path, "train", skip_bad=True, cache=True)
    with pytest.raises(DataError, match="truncated PNG"):
        dataset[0]  # not another sample in its place
    dataset[1]  # cached under its path, so the cache survives the re-indexing below
    bad = dataset.validate(progress=False)
    assert [path for path, _ in bad] == [str(bad_path)]
    assert "cannot decode image" in bad[0][1]
    assert len(dataset) == 1 and dataset.sample_id(0) == "a_000000_000001"
    assert dataset.bad_files == bad
    image, target = dataset[0]
    np.testing.assert_array_equal(image, good_image)
    assert (target == 1).all()


def test_skip_bad_drops_images_without_labels(tmp_path):
    write_pair(tmp_path, "a_000000_000000", rgb_image(), quadrant_label())
    image_path, label_path = write_pair(tmp_path, "a_000000_000001", rgb_image(), quadrant_label())
    label_path.unlink()
    lone_image, lone_label = write_pair(tmp_path, "a_000000_000002", rgb_image(), quadrant_label())
    lone_image.unlink()
    dataset = CityscapesSegmentation(tmp_path, "train", skip_bad=True)
    assert len(dataset) == 1
    assert [path for path, _ in dataset.bad_files] == [str(image_path), str(lone_label)]
    assert "image without a mask" in dataset.bad_files[0][1]
    assert "mask without an image" in dataset.bad_files[1][1]


def test_cache_serves_decoded_pairs_after_the_first_read(tiny_synthetic, tmp_path):
    import shutil

    root = shutil.copytree(tiny_synthetic, tmp_path / "s")
    cached, plain = (
        CityscapesSegmentation(root, "train", cache=True),
        CityscapesSegmentation(root, "train"),
    )
    image, target = plain[0]
    got_image, got_target = cached[0]
    got_image[:] = 0  # the caller owns what it gets: the cache keeps its own copy
    got_target[:] = 0
    for path in cached.samples[0]:
        Path(path).unlink()  # from now on only the cache has the pair
    for _ in range(2):
        got_image, got_target = cached[0]
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_target, target)
    with pytest.raises(DataError):
        plain[0]
