"""Decoded-sample cache: same bytes as decoding, same augmented samples, stale caches refused."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from densemnv3.data.cache import MANIFEST, write_decoded_cache
from densemnv3.data.cityscapes import CityscapesSegmentation
from densemnv3.data.transforms import seg_train_transform
from densemnv3.engine.sampler import SeededDataset
from densemnv3.errors import DataError, UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tiny_synthetic, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_synthetic, tmp_path / "data"))


@pytest.fixture
def cache(root, tmp_path) -> Path:
    return write_decoded_cache(
        CityscapesSegmentation(root, "train"), tmp_path / "cache", progress=False
    )


def open_cached(root, cache, **kwargs) -> CityscapesSegmentation:
    return CityscapesSegmentation(root, "train", decoded_cache=cache, **kwargs)


def test_cached_pairs_are_the_decoded_bytes(root, cache):
    plain, cached = CityscapesSegmentation(root, "train"), open_cached(root, cache)
    assert len(cached) == len(plain) == 8
    for i in range(len(plain)):
        image, label = plain.load(i)
        got_image, got_label = cached.load(i)
        assert isinstance(got_image, np.memmap) and not got_image.flags.writeable
        assert got_image.dtype == np.uint8 and got_label.dtype == np.uint8
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)
    image, label = cached[3]  # no transform: arrays the caller owns
    assert image.flags.writeable and not isinstance(image, np.memmap)
    np.testing.assert_array_equal(label, plain[3][1])


@pytest.mark.parametrize("crop", [(48, 80), (96, 160)])  # smaller and larger than the 64x128 images
def test_cached_training_samples_equal_decoded_ones(root, cache, crop):
    plain = SeededDataset(CityscapesSegmentation(root, "train", seg_train_transform(crop)))
    cached = SeededDataset(open_cached(root, cache, transform=seg_train_transform(crop)))
    for index, seed in [(0, 0), (1, 1), (5, 12345), (7, 99), (2, 7)]:
        image, target = plain[(index, seed)]
        got_image, got_target = cached[(index, seed)]
        assert got_image.shape == (3, *crop)
        assert got_image.equal(image) and got_target.equal(target)


def test_cache_works_for_the_training_task(root, cache, tiny_overrides, tmp_path):
    from densemnv3.config import load_config
    from densemnv3.tasks import build_task

    cfg = load_config(
        ROOT / "configs" / "lraspp_synthetic.py",
        tiny_overrides(root, tmp_path / "run", data__decoded_cache=cache),
    )
    task = build_task(cfg)
    assert task.train_dataset()._decoded is not None
    assert task.val_dataset()._decoded is None  # the cache is of the training split


def _expect_stale(root, cache, match):
    with pytest.raises(DataError, match=match) as error:
        open_cached(root, cache)
    assert "tools/cache_dataset.py" in str(error.value) and str(cache) in str(error.value)


def test_modified_source_is_stale(root, cache):
    image = Path(CityscapesSegmentation(root, "train").samples[2][0])
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    _expect_stale(root, cache, f"stale: {image} changed")


def test_rewritten_label_of_the_same_size_and_time_is_stale_only_by_size(root, cache):
    label = Path(CityscapesSegmentation(root, "train").samples[4][1])
    stat = label.stat()
    label.write_bytes(label.read_bytes() + b"\0")  # bigger, then the old mtime back
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _expect_stale(root, cache, f"{label} changed")


def test_added_and_removed_samples_are_stale(root, cache):
    image, label = CityscapesSegmentation(root, "train").samples[0]
    new_image = image.replace("_000000_leftImg8bit", "_999999_leftImg8bit")
    new_label = label.replace("_000000_gtFine", "_999999_gtFine")
    assert new_image != image
    shutil.copy(image, new_image)
    shutil.copy(label, new_label)
    _expect_stale(root, cache, r"was added \(1 added, 0 removed")
    os.remove(new_image)
    os.remove(new_label)
    open_cached(root, cache)  # back as it was
    os.remove(image)
    os.remove(label)
    _expect_stale(root, cache, r"was removed \(0 added, 1 removed")


def test_another_root_or_split_is_refused(root, cache, tmp_path):
    other = Path(shutil.copytree(root, tmp_path / "other"))  # the same files elsewhere
    _expect_stale(other, cache, f"cache is of {os.path.realpath(root)} split 'train', not of")
    with pytest.raises(DataError, match="split 'train', not of .* split 'val'"):
        CityscapesSegmentation(root, "val", decoded_cache=cache)


def test_old_format_version_and_missing_manifest_are_refused(root, cache):
    manifest = json.loads((cache / MANIFEST).read_text())
    (cache / MANIFEST).write_text(json.dumps(manifest | {"version": 0}))
    _expect_stale(
        root, cache, "version 0, this densemnv3 reads densemnv3-decoded-cityscapes version 1"
    )
    (cache / MANIFEST).unlink()
    _expect_stale(root, cache, "no decoded cache here")


def test_missing_cached_array_names_the_file(root, cache):
    (cache / "000003_label.npy").unlink()
    with pytest.raises(DataError, match="000003_label.npy: cannot read the cached array"):
        open_cached(root, cache).load(3)


def test_rebuild_replaces_the_cache_and_refuses_foreign_folders(root, cache, tmp_path):
    image = Path(CityscapesSegmentation(root, "train").samples[1][0])
    os.utime(image)
    write_decoded_cache(CityscapesSegmentation(root, "train"), cache, progress=False)
    open_cached(root, cache)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="not a decoded cache"):
        write_decoded_cache(CityscapesSegmentation(root, "train"), foreign, progress=False)
    assert (foreign / "holiday.jpg").exists()


def test_bad_sample_is_recorded_and_skipped(root, tmp_path):
    dataset = CityscapesSegmentation(root, "train", skip_bad=True)
    bad = Path(dataset.samples[2][0])
    bad.write_bytes(bad.read_bytes()[:100])  # truncated PNG
    with pytest.raises(DataError, match="cannot decode"):
        write_decoded_cache(CityscapesSegmentation(root, "train"), tmp_path / "c1", progress=False)
    cache = write_decoded_cache(dataset, tmp_path / "c2", progress=False)
    cached = CityscapesSegmentation(root, "train", skip_bad=True, decoded_cache=cache)
    with pytest.raises(DataError, match="cannot decode"):  # never replaced by another sample
        cached[2]
    # skip_bad leaves it out up front (what the trainer does), with the reason the cache recorded
    assert [path for path, _ in cached.validate(progress=False)] == [str(bad)]
    assert cached.bad_files[0][0] == str(bad) and "cannot decode" in cached.bad_files[0][1]
    np.testing.assert_array_equal(cached[2][0], CityscapesSegmentation(root, "train").load(3)[0])


def test_tool_writes_the_cache_of_the_config(root, tmp_path, capsys):
    from tools.cache_dataset import main

    out = tmp_path / "tool_cache"
    config = str(ROOT / "configs" / "lraspp_synthetic.py")
    assert (
        main(
            [
                config,
                "--no-progress",
                "--set",
                f"data.root={root}",
                f"data.decoded_cache={out}",
                "data.synthetic=None",
            ]
        )
        == 0
    )
    assert "8 samples" in capsys.readouterr().out
    np.testing.assert_array_equal(
        open_cached(root, out).load(0)[1], CityscapesSegmentation(root, "train").load(0)[1]
    )
    with pytest.raises(UserError, match="data.decoded_cache=DIR"):
        main([config, "--set", f"data.root={root}", "data.synthetic=None"])
