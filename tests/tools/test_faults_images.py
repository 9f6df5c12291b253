"""Image files through the tools: written whole or not at all, and read no bigger than allowed.

A full disk under ``eval_seg --save-predictions`` and ``make_synthetic`` (injected at Python's
``open``, as in ``test_faults_writes``, or with ``RLIMIT_FSIZE``, which the spawned workers
inherit) stops the tool with one ``error:`` line and leaves no partial or empty image under a final
name. A tiny file whose header declares 40000x40000 (PNG) or 32000x32000 (JPEG) is refused before
it is decoded, with the declared size and the limit, at a peak memory measured in the tool's
process.
"""

import json
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.config import load_config
from densemnv3.data.synthetic import make_synthetic, synthetic_exists
from densemnv3.models import build_model
from tests.tools.test_faults_writes import assert_write_error, run_with_full_disk

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "seg": str(ROOT / "configs" / "lraspp_synthetic.py"),
    "det": str(ROOT / "configs" / "ssdlite_synthetic.py"),
}
SIZE = (64, 128)
GB = 1 << 20  # ru_maxrss is in KiB on Linux

#: Runs ARGV[2:] and writes its peak resident memory (KiB) to ARGV[1]: this process's children
#: are the tool alone, not every tool that pytest ran before.
PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
    "open(sys.argv[1], 'w').write(str(peak)); sys.exit(code)"
)


def overrides(task: str, root: Path, work: Path, **extra) -> list[str]:
    values = {
        "data.root": root,
        "data.synthetic": None,
        "data.eval_batch_size": 2,
        "data.cache_images": False,
        "work_dir": work,
    }
    values |= (
        {"model.name": "lraspp_mobilenet_v3_small"}
        if task == "seg"
        else {"data.image_size": list(SIZE)}
    )
    return ["--set", *(f"{k}={v}" for k, v in (values | extra).items())]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """2 train and 4 val images of 64x128, and random-weight checkpoints of both tasks."""
    root = make_synthetic(
        tmp_path_factory.mktemp("images") / "data",
        train=2,
        val=4,
        size=SIZE,
        seed=4,
        progress=False,
    )
    for task, config in CONFIGS.items():
        torch.manual_seed(0)
        cfg = load_config(config, overrides(task, root, root.parent / "run")[1:])
        state = {
            "model": build_model(cfg.model).state_dict(),
            "arch": cfg.model.name,
            "config": asdict(cfg),
        }
        torch.save(state, root.parent / f"{task}.pt")
    return root


def eval_command(task: str, base: Path, root: Path, out: Path, *more: str) -> list[str]:
    return [
        str(ROOT / "tools" / f"eval_{task}.py"),
        CONFIGS[task],
        "--weights",
        str(base.parent / f"{task}.pt"),
        "--out",
        str(out),
        *more,
    ]


def val_images(root: Path) -> list[Path]:
    return sorted((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))


def no_partial_images(folder: Path) -> list[Path]:
    """The images under ``folder``, each checked whole (it decodes), with no temp file beside."""
    assert sorted(p.name for p in folder.rglob("*.tmp")) == []
    found = sorted(folder.rglob("*.png"))
    for path in found:
        assert path.stat().st_size > 0 and cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None
    return found


# ---------------------------------------------------------------- a full disk


def test_save_predictions_on_a_full_disk_stops_and_leaves_whole_files(base, tmp_path):
    preds = tmp_path / "out" / "preds"
    proc = run_with_full_disk(
        r"/preds/\.",
        2,
        *eval_command(
            "seg",
            base,
            base,
            tmp_path / "out",
            "--save-predictions",
            str(preds),
            *overrides("seg", base, tmp_path),
        ),
    )
    line = assert_write_error(
        proc,
        f"error: {preds}/",
        ": cannot write, the disk is full (No space left on device)",
        "no temp file is left; the predictions "
        f"written before it in {preds} are whole; free some space and run",
    )
    assert "libpng" not in proc.stderr and "wrote" not in proc.stdout
    refused = Path(re.match(r"error: (\S+\.png): ", line).group(1))
    written = no_partial_images(preds)
    assert len(written) == 2 and refused not in written and refused.parent == preds


def rlimit_fsize(limit: int):
    def apply() -> None:  # a file past the limit gets EFBIG (with SIGXFSZ ignored, not a kill)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("fault", ["enospc_in_process", "efbig_in_spawned_workers"])
def test_make_synthetic_on_a_full_disk_leaves_no_partial_set(tmp_path, fault):
    out = tmp_path / "synthetic"
    if fault == "enospc_in_process":  # 6 images: written by the tool's own process
        counts = {"train": 4, "val": 2}
        args = ["--out", str(out), "--train", "4", "--val", "2", "--size", *map(str, SIZE)]
        proc = run_with_full_disk(r"_gtFine_color\.png", 3, "make_synthetic.py", *args)
        problem = "the disk is full (No space left on device)"
    else:  # 16 images: two spawned workers, and a limit that any leftImg8bit PNG is over
        counts = {"train": 12, "val": 4}
        args = ["--out", str(out), "--train", "12", "--val", "4", "--size", *map(str, SIZE)]
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "make_synthetic.py"), *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            preexec_fn=rlimit_fsize(4096),
        )
        problem = "the file is too large for this file system (File too large)"
    assert_write_error(
        proc,
        f"error: {out}/",
        f": cannot write, {problem}",
        "no temp file is "
        "left; the files of the unfinished set were removed (it has no .complete, "
        "so no run takes it as complete); free some space and run again",
    )
    assert "libpng" not in proc.stderr and "wrote" not in proc.stdout
    assert [p.name for p in out.rglob("*")] == [".in_progress"]
    assert not synthetic_exists(out, **counts, size=SIZE)
    again = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_synthetic.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert synthetic_exists(out, **counts, size=SIZE)
    assert len(no_partial_images(out)) == 4 * sum(counts.values())


# ---------------------------------------------------------------- a header that claims too much


def huge_png(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """An 8x8 PNG (86 bytes, valid CRCs) whose IHDR declares ``width`` x ``height``."""
    data = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    path.write_bytes(data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:])
    return path


def huge_jpeg(path: Path, width: int = 32_000, height: int = 32_000) -> Path:
    """An 8x8 baseline JPEG (about 600 bytes) whose SOF0 declares ``width`` x ``height``."""
    data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    sof = data.index(b"\xff\xc0")
    path.write_bytes(data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :])
    return path


def claiming_set(base: Path, tmp_path: Path, task: str) -> tuple[Path, Path, str]:
    """A copy of the set whose second val image claims a huge size: the 40000x40000 PNG for
    segmentation; for detection the 32000x32000 JPEG, named so in the COCO file. -> (root, the
    file, its size as the error gives it)."""
    root = tmp_path / "data"
    shutil.copytree(base, root)
    image = val_images(root)[1]
    if task == "seg":
        return root, huge_png(image), "40000x40000 (1,600,000,000 pixels)"
    ann = root / "annotations" / "instances_val.json"
    data = json.loads(ann.read_text())
    entry = next(i for i in data["images"] if i["file_name"].endswith(image.name))
    entry["file_name"] = entry["file_name"].replace(".png", ".jpg")
    ann.write_text(json.dumps(data))
    image.unlink()
    return root, huge_jpeg(image.with_suffix(".jpg")), "32000x32000 (1,024,000,000 pixels)"


@pytest.mark.parametrize("task", ["seg", "det"])
@pytest.mark.parametrize("skip_bad", [False, True])
def test_image_claiming_a_huge_size_is_refused_before_decoding(
    base, tmp_path, task, skip_bad, assert_one_error_line
):
    root, image, declared = claiming_set(base, tmp_path, task)
    assert image.stat().st_size < 1000
    out, peak = tmp_path / "out", tmp_path / "peak_kib"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK,
            str(peak),
            sys.executable,
            *eval_command(
                task,
                base,
                root,
                out,
                *overrides(task, root, tmp_path / "run", **{"data.skip_bad": skip_bad}),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    reason = (
        f"{image}: the image declares {declared}, over the limit of 268,435,456 pixels "
        f"(data.max_image_pixels); if it is real, raise the limit with --set "
        f"data.max_image_pixels={declared.split()[1][1:].replace(',', '')}, or skip such "
        "files with --set data.skip_bad=True"
    )
    if skip_bad:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "skipped_files.txt").read_text() == f"{image}\t{reason}\n"
        assert json.loads((out / "metrics.json").read_text())["images_skipped"] == 1
    else:
        assert_one_error_line(proc, reason)
    assert int(peak.read_text()) < GB, f"peak {int(peak.read_text()) / GB:.2f} GiB"
