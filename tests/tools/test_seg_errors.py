"""Bad input to the segmentation tools: one readable line naming the file or key, no traceback."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.models import lraspp_mobilenet_v3_large

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "lraspp_synthetic.py")


def config_model():
    """The model CONFIG builds (MobileNetV3-Large with the reduced tail), random weights."""
    return lraspp_mobilenet_v3_large(reduced_tail=True)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def synthetic_copy(tiny_synthetic, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    return root


def first_image(root: Path, split: str = "train") -> Path:
    return sorted((root / "leftImg8bit" / split).rglob("*_leftImg8bit.png"))[0]


def label_of(image: Path) -> Path:
    split, city = image.parts[-3], image.parts[-2]
    stem = image.name.replace("_leftImg8bit.png", "")
    return image.parents[3] / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"


def test_missing_dataset_root_says_how_to_fix(run_tool, tiny_overrides, tmp_path):
    proc = run_tool(
        "train_seg.py", CONFIG, "--set", *tiny_overrides(tmp_path / "nowhere", tmp_path / "run")
    )
    assert_one_line_error(proc, str(tmp_path / "nowhere"), "data.root", "make_synthetic.py")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_fails_fast_naming_the_file(
    run_tool, tiny_overrides, synthetic_copy, tmp_path, workers
):
    bad = first_image(synthetic_copy)
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(synthetic_copy, tmp_path / "run", data__workers=workers),
    )
    assert_one_line_error(proc, bad.name)


@pytest.mark.slow
def test_skip_bad_skips_counts_and_lists(run_tool, tiny_overrides, synthetic_copy, tmp_path):
    corrupt = first_image(synthetic_copy)
    corrupt.write_bytes(b"not a png")
    bad_ids = sorted((synthetic_copy / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))[1]
    label = cv2.imread(str(label_of(bad_ids)), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 200  # not a Cityscapes label id
    cv2.imwrite(str(label_of(bad_ids)), label)
    work = tmp_path / "run"
    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(synthetic_copy, work, data__skip_bad=True, schedule__iters=2),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 2 bad files" in proc.stderr
    listed = (work / "skipped_files.txt").read_text()
    assert corrupt.name in listed and bad_ids.name in listed and "200" in listed


def test_invalid_label_id_names_file_and_id(run_tool, tiny_overrides, synthetic_copy, tmp_path):
    image = first_image(synthetic_copy, "val")
    label = cv2.imread(str(label_of(image)), cv2.IMREAD_UNCHANGED)
    label[:2, :2] = 200
    cv2.imwrite(str(label_of(image)), label)
    weights = tmp_path / "w.pt"
    torch.save({"model": config_model().state_dict()}, weights)
    proc = run_tool(
        "eval_seg.py",
        CONFIG,
        "--weights",
        str(weights),
        "--set",
        f"data.root={synthetic_copy}",
        "data.synthetic=None",
    )
    assert_one_line_error(proc, label_of(image).name, "200")


def test_label_of_another_size(run_tool, tiny_overrides, synthetic_copy, tmp_path):
    image = first_image(synthetic_copy, "val")
    cv2.imwrite(str(label_of(image)), np.full((10, 10), 7, np.uint8))
    weights = tmp_path / "w.pt"
    torch.save({"model": config_model().state_dict()}, weights)
    proc = run_tool(
        "eval_seg.py",
        CONFIG,
        "--weights",
        str(weights),
        "--set",
        f"data.root={synthetic_copy}",
        "data.synthetic=None",
    )
    assert_one_line_error(proc, label_of(image).name, "10")


def test_grayscale_and_rgba_images_are_converted(tiny_synthetic, tmp_path):
    from densemnv3.data.cityscapes import CityscapesSegmentation

    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    images = sorted((root / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    rgb = cv2.imread(str(images[0]))
    cv2.imwrite(str(images[0]), cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images[1]), cv2.cvtColor(cv2.imread(str(images[1])), cv2.COLOR_BGR2BGRA))
    ds = CityscapesSegmentation(root, "train")
    for i in (0, 1):
        image, _ = ds[i]
        assert image.shape[-1] == 3 and image.dtype == np.uint8


def test_empty_split(run_tool, tiny_overrides, synthetic_copy, tmp_path):
    for png in (synthetic_copy / "leftImg8bit" / "val").rglob("*.png"):
        png.unlink()
    proc = run_tool(
        "train_seg.py", CONFIG, "--set", *tiny_overrides(synthetic_copy, tmp_path / "run")
    )
    assert_one_line_error(proc, "val")


@pytest.mark.parametrize("problem", ["missing", "truncated", "other_arch"])
def test_bad_checkpoints(run_tool, tiny_synthetic, tmp_path, problem):
    path = tmp_path / "ckpt.pt"
    if problem == "truncated":
        torch.save({"model": config_model().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif problem == "other_arch":
        from densemnv3.models import lraspp_mobilenet_v3_small

        torch.save({"model": lraspp_mobilenet_v3_small().state_dict()}, path)
    proc = run_tool(
        "eval_seg.py",
        CONFIG,
        "--weights",
        str(path),
        "--set",
        f"data.root={tiny_synthetic}",
        "data.synthetic=None",
    )
    expected = {
        "missing": "checkpoint not found",
        "truncated": "truncated",
        "other_arch": "segmentation checkpoint of MobileNetV3-Small",
    }[problem]
    assert_one_line_error(proc, str(path), expected)


def test_wrong_type_and_unknown_model_option(run_tool, tiny_overrides, tiny_synthetic, tmp_path):
    proc = run_tool("train_seg.py", CONFIG, "--set", "data.batch_size=two")
    assert_one_line_error(proc, "data.batch_size", "expected int")
    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--set",
        *tiny_overrides(tiny_synthetic, tmp_path / "run", model__options="{'pol': 'paper'}"),
    )
    assert_one_line_error(proc, "model.options.pol", "did you mean 'pool'")


@pytest.mark.slow
def test_eval_writes_official_label_id_pngs(run_tool, tiny_synthetic, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"model": config_model().state_dict()}, weights)
    out, preds = tmp_path / "out", tmp_path / "preds"
    proc = run_tool(
        "eval_seg.py",
        CONFIG,
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--save-predictions",
        str(preds),
        "--set",
        f"data.root={tiny_synthetic}",
        "data.synthetic=None",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pngs = sorted(preds.glob("*.png"))
    val_images = sorted((tiny_synthetic / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    assert [p.stem for p in pngs] == sorted(
        i.name.replace("_leftImg8bit.png", "") for i in val_images
    )
    ids = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint8 and ids.shape == (64, 128)
    assert set(np.unique(ids)) <= {
        7,
        8,
        11,
        12,
        13,
        17,
        19,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    }
    assert "mIoU" in proc.stdout and (out / "metrics.json").is_file()
