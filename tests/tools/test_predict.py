"""``densemnv3 predict``: the files it writes, equal to evaluation's, resumable, sharded, and
unharmed by bad files."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from densemnv3.cli.eval_seg import main as eval_seg_main
from densemnv3.cli.predict import main as predict_main
from densemnv3.data.labels import TRAIN_ID_TO_ID

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    """A Cityscapes-layout set of 6 validation images (128x256), two cities."""
    from densemnv3.data.synthetic import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("predict_street"), train=1, val=6, size=(128, 256), seed=4,
        progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def flat_images(street, tmp_path_factory) -> Path:
    """The 6 images in one folder, plus one in a subfolder."""
    folder = tmp_path_factory.mktemp("flat")
    paths = sorted((street / "leftImg8bit" / "val").glob("*/*.png"))
    for path in paths[:6]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(paths[0].read_bytes())
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    """Every per-image output under ``folder`` (labels, overlays, ..., records), by path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.parent != folder
    }


def test_label_ids_equal_eval_save_predictions(
    street, fitted_seg_checkpoint, run_in_process, tmp_path
):
    """--match-eval: the label PNGs of eval_seg --save-predictions, bit for bit; the default (fast)
    path: the same up to the pixels where two classes' scores tie within rounding."""
    code, out, err = run_in_process(
        eval_seg_main,
        ["--weights", str(fitted_seg_checkpoint), "--set", f"data.root={street}",
         "--save-predictions", str(tmp_path / "eval"), "--out", str(tmp_path / "metrics")],
    )  # fmt: skip
    assert code == 0, err
    source = street / "leftImg8bit" / "val"
    for flags, folder in (
        (["--match-eval"], tmp_path / "exact"),
        ([], tmp_path / "fast"),
    ):
        code, out, err = run_in_process(
            predict_main,
            ["--weights", str(fitted_seg_checkpoint), "--source", str(source), "--recursive",
             "--out", str(folder), "--label-ids", "--save", "labels", *flags],
        )  # fmt: skip
        assert code == 0, err
        assert "predicted 6 images" in out
    evaluated = sorted((tmp_path / "eval").glob("*.png"))
    assert len(evaluated) == 6
    for path in evaluated:
        stem = path.stem  # eval names a prediction by the sample: city_seq_frame
        city = stem.split("_")[0]
        ours = tmp_path / "exact" / "labels" / city / f"{stem}_leftImg8bit.png"
        ref = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(cv2.imread(str(ours), cv2.IMREAD_UNCHANGED), ref), ours
        fast = cv2.imread(str(tmp_path / "fast" / ours.relative_to(tmp_path / "exact")), -1)
        assert (fast != ref).mean() < 1e-3
        assert set(np.unique(ref)) <= set(TRAIN_ID_TO_ID.tolist())


def test_outputs_mirror_the_source(flat_images, fitted_seg_checkpoint, run_in_process, tmp_path):
    """Default --save: labels (train ids) and overlays under the source's relative paths, a row
    per image in predictions.csv and the summary line; probs: float16 probabilities whose argmax
    is the label map."""
    out = tmp_path / "out"
    code, stdout, err = run_in_process(
        predict_main,
        ["--weights", str(fitted_seg_checkpoint), "--source", str(flat_images), "--recursive",
         "--out", str(out), "--save", "labels", "overlays", "probs", "--batch-size", "3"],
    )  # fmt: skip
    assert code == 0, err
    names = sorted(p.relative_to(flat_images).with_suffix("") for p in flat_images.rglob("*.png"))
    assert len(names) == 7
    for name in names:
        labels = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(flat_images / f"{name}.png"))
        assert labels.shape == image.shape[:2] and labels.max() < 19
        overlay = cv2.imread(str(out / "overlays" / f"{name}.jpg"))
        assert overlay.shape == image.shape
        probs = np.load(out / "probs" / f"{name}.npy")
        assert probs.dtype == np.float16 and probs.shape == (19, *image.shape[:2])
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-2)
        assert (probs.argmax(0) == labels).mean() > 0.99  # float16 ties aside
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "path,width,height,ms,boxes,classes"
    assert len(rows) == 1 + 7 + 1 and rows[-1].startswith("# 7 images, 0 skipped, ")
    assert "images/s" in rows[-1] and "fp32" in rows[-1]
    assert {r.split(",")[0] for r in rows[1:-1]} == {str(flat_images / f"{n}.png") for n in names}
    for stage in ("decode", "network", "post-process", "write", "end-to-end"):
        assert f"\n{stage}" in stdout


def test_video_frames_are_named_by_index(fitted_seg_checkpoint, run_in_process, tmp_path):
    from densemnv3.data.synthetic import make_synthetic_video

    video = make_synthetic_video(tmp_path / "drive.mp4", frames=5, size=(64, 128), fps=5.0)
    code, out, err = run_in_process(
        predict_main,
        ["--weights", str(fitted_seg_checkpoint), "--source", str(video), "--out",
         str(tmp_path / "out"), "--save", "labels"],
    )  # fmt: skip
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "out" / "labels" / "drive").glob("*.png"))
    assert written == [f"{i:06d}.png" for i in range(5)]


def test_bad_files_are_listed_and_the_others_written(
    flat_images, fitted_seg_checkpoint, run_in_process, tmp_path
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(flat_images.glob("*.png"))[:3]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.png").write_bytes(good[0].read_bytes()[:3000])
    (folder / "notes.jpg").write_text("not an image at all\n")
    (folder / "readme.md").write_text("left out: not an image suffix\n")
    out = tmp_path / "out"
    argv = ["--weights", str(fitted_seg_checkpoint), "--source", str(folder), "--out", str(out)]
    code, stdout, err = run_in_process(predict_main, argv)
    assert code == 0, err
    assert "warning: 3 files could not be read" in err and "skipped_files.txt" in err
    assert "left out 1 files that are not images (1 .md)" in stdout
    listed = dict(line.split("\t") for line in (out / "skipped_files.txt").read_text().splitlines())
    assert set(listed) == {str(folder / n) for n in ("empty.png", "cut.png", "notes.jpg")}
    assert "empty file" in listed[str(folder / "empty.png")]
    assert "truncated PNG" in listed[str(folder / "cut.png")]
    assert "not an image" in listed[str(folder / "notes.jpg")]
    assert sorted(p.name for p in (out / "labels").glob("*.png")) == sorted(p.name for p in good)
    assert "# 3 images, 3 skipped" in (out / "predictions.csv").read_text()

    code, _, err = run_in_process(predict_main, [*argv, "--strict", "--overwrite"])
    assert code == 2 and err.startswith("error: ") and "cut.png" in err  # the first bad one

    for path in good:
        (folder / path.name).unlink()
    code, _, err = run_in_process(predict_main, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: no image could be read")


def test_shards_together_are_one_unsharded_run(
    flat_images, fitted_seg_checkpoint, run_in_process, tmp_path
):
    base = ["--weights", str(fitted_seg_checkpoint), "--source", str(flat_images), "--recursive"]
    base += ["--save", "labels", "overlays", "--batch-size", "2"]
    said = []
    for shard in ("0/2", "1/2"):
        code, out, err = run_in_process(
            predict_main, [*base, "--out", str(tmp_path / "sharded"), "--shard", shard]
        )
        assert code == 0, err
        said.append(out)
    assert "predicted 4 images" in said[0] and "3 images of the source have no outputs" in said[0]
    assert "predicted 3 images" in said[1] and "no outputs" not in said[1]
    code, _, err = run_in_process(predict_main, [*base, "--out", str(tmp_path / "whole")])
    assert code == 0, err
    sharded, whole = _files(tmp_path / "sharded"), _files(tmp_path / "whole")
    assert sharded.keys() == whole.keys() and len(whole) == 7 * 3  # labels, overlays, records
    for key in whole:
        if key.startswith(("labels", "overlays")):
            assert sharded[key] == whole[key], key
    rows = (tmp_path / "sharded" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 + 1  # the last shard gathered every image's row


def _det_model(export_checkpoints) -> list[str]:
    return [str(export_checkpoints / "det_config.py"), "--weights",
            str(export_checkpoints / "det.pt"), "--score-threshold", "0.05"]  # fmt: skip


def test_detections_json_and_txt(flat_images, export_checkpoints, run_in_process, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_in_process(
        predict_main,
        [*_det_model(export_checkpoints), "--source", str(flat_images), "--out", str(out),
         "--save", "json", "txt", "overlays"],
    )  # fmt: skip
    assert code == 0, err
    detections = json.loads((out / "detections.json").read_text())
    assert detections, "no boxes: lower the score threshold of the test"
    width, height = 256, 128
    for det in detections:
        assert set(det) == {"image_id", "category_id", "bbox", "score"}
        x, y, w, h = det["bbox"]
        assert 0 <= x <= x + w <= width + 0.01 and 0 <= y <= y + h <= height + 0.01
        assert 1 <= det["category_id"] <= 3 and det["score"] >= 0.05
    names = {p.stem for p in flat_images.glob("*.png")}
    assert {d["image_id"] for d in detections} <= names  # ids from the file names
    lines = sum(len((out / "txt" / f"{n}.txt").read_text().splitlines()) for n in names)
    assert lines == len(detections)


@pytest.mark.slow
def test_sigkill_then_restart_writes_every_image_once(flat_images, export_checkpoints, tmp_path):
    """Killed at a random moment and started again with the same command: each image's outputs
    exist once, whole, with no temp file left, and detections.json equals an uninterrupted run's."""
    folder = tmp_path / "many"
    folder.mkdir()
    sources = sorted(flat_images.glob("*.png"))
    count = 64  # enough that the kill lands mid-run on a fast machine too
    for i in range(count):
        (folder / f"{i:03d}.png").write_bytes(sources[i % len(sources)].read_bytes())
    argv = [sys.executable, "-m", "densemnv3", "predict", *_det_model(export_checkpoints)]
    argv += ["--source", str(folder), "--save", "json", "overlays", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*argv, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL)
    records = killed / ".records"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(records.glob("*.json"))) < 3:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(records.glob("*.json"))) < count, "finished before the kill: use more images"
    restart = subprocess.run([*argv, "--out", str(killed)], env=env, capture_output=True, text=True)
    assert restart.returncode == 0, restart.stderr
    assert "already done" in restart.stdout
    clean = subprocess.run(
        [*argv, "--out", str(tmp_path / "clean")], env=env, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stderr
    assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    overlays = sorted((killed / "overlays").glob("*"))
    assert [p.name for p in overlays] == [f"{i:03d}.jpg" for i in range(count)]
    assert all(cv2.imread(str(p)) is not None for p in overlays)
    for record in records.glob("*.json"):
        json.loads(record.read_text())
    detections = json.loads((killed / "detections.json").read_text())
    reference = json.loads((tmp_path / "clean" / "detections.json").read_text())
    key = lambda d: (d["image_id"], d["category_id"], tuple(d["bbox"]), d["score"])  # noqa: E731
    assert sorted(map(key, detections)) == sorted(map(key, reference))
    assert len(set(map(key, detections))) == len(detections)


def test_predict_files_yields_in_order(flat_images, fitted_seg_checkpoint, tmp_path):
    from densemnv3.errors import DataError
    from densemnv3.inference import Predictor

    predictor = Predictor.from_checkpoint(fitted_seg_checkpoint, device="cpu")
    paths = sorted(flat_images.glob("*.png"))
    got = list(predictor.predict_files(paths, batch_size=4, workers=2))
    assert [p for p, _ in got] == paths
    for path, labels in got:
        assert np.array_equal(labels, predictor(cv2.imread(str(path))))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataError, match="bad.png"):
        list(predictor.predict_files([paths[0], tmp_path / "bad.png"]))


def test_ray_data_recipe(flat_images, fitted_seg_checkpoint, tmp_path):
    """The documented Ray Data recipe, in Ray's local mode."""
    ray = pytest.importorskip("ray")
    from densemnv3.inference.outputs import FilePredictor

    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    try:
        paths = sorted(str(p) for p in flat_images.glob("*.png"))
        data = ray.data.from_items([{"path": p} for p in paths])
        rows = data.map_batches(
            FilePredictor,
            fn_constructor_kwargs={"weights": str(fitted_seg_checkpoint), "out": str(tmp_path)},
            batch_size=3,
            concurrency=1,
        ).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["path"] for r in rows) == paths
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.png")) == [
        Path(p).name for p in paths
    ]


def test_an_onnx_file_predicts_as_its_checkpoint(
    street, fitted_seg_checkpoint, run_in_process, tmp_path
):
    """An exported file predicts what its checkpoint does (up to the runtime's rounding), and
    knows its classes (--label-ids takes it)."""
    from densemnv3.cli.export import main as export_main

    onnx = tmp_path / "seg.onnx"
    code, _, err = run_in_process(
        export_main,
        ["--weights", str(fitted_seg_checkpoint), "--format", "onnx", "--out", str(onnx)],
    )
    assert code == 0, err
    source = street / "leftImg8bit" / "val"
    for weights, folder in ((fitted_seg_checkpoint, "pt"), (onnx, "onnx")):
        code, out, err = run_in_process(
            predict_main,
            ["--weights", str(weights), "--source", str(source), "--recursive", "--runtime",
             "onnxruntime" if folder == "onnx" else "torch", "--out", str(tmp_path / folder),
             "--label-ids"],
        )  # fmt: skip
        assert code == 0, err
    assert "onnxruntime" in out
    for path in sorted((tmp_path / "pt" / "labels").rglob("*.png")):
        ours = cv2.imread(str(tmp_path / "onnx" / path.relative_to(tmp_path / "pt")), -1)
        assert (ours != cv2.imread(str(path), -1)).mean() < 1e-3


def test_coco_ids_name_images_and_categories(
    flat_images, export_checkpoints, run_in_process, tmp_path
):
    names = sorted(p.name for p in flat_images.glob("*.png"))
    coco = {
        "images": [{"id": 100 + i, "file_name": f"city/{n}"} for i, n in enumerate(names)],
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    code, _, err = run_in_process(
        predict_main,
        [*_det_model(export_checkpoints), "--source", str(flat_images), "--out",
         str(tmp_path / "out"), "--coco-ids", str(tmp_path / "coco.json")],
    )  # fmt: skip
    assert code == 0, err
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert detections and {d["image_id"] for d in detections} <= set(range(100, 100 + 6))
    (tmp_path / "other.json").write_text(json.dumps({"images": [], "categories": []}))
    code, _, err = run_in_process(
        predict_main,
        [*_det_model(export_checkpoints), "--source", str(flat_images), "--out",
         str(tmp_path / "o2"), "--coco-ids", str(tmp_path / "other.json")],
    )  # fmt: skip
    assert code == 2 and "is not among the file names of the COCO json" in err
