import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.cli.entry import run_main
from densemnv3.config import load_config
from densemnv3.data.synthetic import make_synthetic_video
from densemnv3.models import build_model

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "demo_video.py"
CONFIGS = {
    "segmentation": "from densemnv3.config import Config, ModelConfig\n"
    "cfg = Config(task='segmentation', "
    "model=ModelConfig(name='lraspp_mobilenet_v3_small', num_classes=19))\n",
    "detection": "from densemnv3.config import Config, DataConfig, ModelConfig\n"
    "cfg = Config(task='detection', "
    "model=ModelConfig(name='ssdlite320_mobilenet_v3_small', num_classes=9),\n"
    "             data=DataConfig(root='no-data-here', label_mapping='contiguous'))\n",
}


@pytest.fixture(scope="module")
def demo():
    """The demo's module (``tools/demo_video.py`` runs its ``main``; tests/cli checks that)."""
    from densemnv3.cli import demo as module

    return module


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny random-weight checkpoints for both tasks and a 12-frame 64x128 synthetic video."""
    root = tmp_path_factory.mktemp("demo")
    for task, text in CONFIGS.items():
        (root / f"{task}.py").write_text(text)
        torch.manual_seed(0)
        model = build_model(load_config(root / f"{task}.py").model)
        torch.save({"model": model.state_dict()}, root / f"{task}.pt")
    make_synthetic_video(root / "clip.mp4", frames=12, size=(64, 128))
    return root


def args(work, task, *more):
    return [
        str(work / f"{task}.py"),
        "--weights",
        str(work / f"{task}.pt"),
        "--device",
        "cpu",
        *more,
    ]


def read_back(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_overlapping_pipeline_writes_every_frame_in_order(demo, work, tmp_path, capsys):
    """Headless, drawing and writing run in a thread beside inference: frame k of the output is
    frame k of the source (alpha 0: the overlay leaves the picture; the FPS text is left out)."""
    out = tmp_path / "out.avi"
    source = make_synthetic_video(tmp_path / "drive.avi", frames=10, size=(128, 256), fps=4.0)
    assert (
        demo.main(
            args(
                work,
                "segmentation",
                "--source",
                str(source),
                "--output",
                str(out),
                "--no-display",
                "--alpha",
                "0",
                "--threads",
                "2",
                "--input-size",
                "64",
                "128",
            )
        )
        == 0
    )
    written, original = read_back(out), read_back(source)
    assert len(written) == len(original) == 10
    below_text = slice(40, None)
    for k, frame in enumerate(written):
        errors = [
            np.abs(frame[below_text].astype(int) - o[below_text].astype(int)).mean()
            for o in original
        ]
        assert int(np.argmin(errors)) == k, errors
    stdout = capsys.readouterr().out
    assert "network input 64x128, label map scaled to the frame" in stdout
    assert ", 2 threads" in stdout and "end-to-end" in stdout


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_headless_run_writes_every_frame(demo, work, tmp_path, capsys, task):
    out = tmp_path / "out.mp4"
    code = demo.main(
        args(work, task, "--source", str(work / "clip.mp4"), "--output", str(out), "--no-display")
    )
    assert code == 0
    frames = read_back(out)
    assert len(frames) == len(read_back(work / "clip.mp4")) == 12
    assert frames[0].shape == (64, 128, 3)
    stdout = capsys.readouterr().out
    assert "display off: --no-display" in stdout
    assert (
        "inference: cpu, fp32, channels_last, compile off, cuda-graphs off" in stdout
    )  # CPU defaults
    assert "frames: 12 processed, 0 dropped, 0 read failures" in stdout
    for stage in ("decode", "infer", "draw", "write", "end-to-end"):
        assert stage in stdout
    assert " FPS" in stdout and f"wrote 12 frames to {out}" in stdout


def test_max_frames(demo, work, tmp_path, capsys):
    out = tmp_path / "out.avi"
    assert (
        demo.main(
            args(
                work,
                "segmentation",
                "--source",
                str(work / "clip.mp4"),
                "--output",
                str(out),
                "--memory-format",
                "nchw",
                "--no-display",
                "--max-frames",
                "5",
                "--threads",
                "2",
            )
        )
        == 0
    )
    assert len(read_back(out)) == 5
    stdout = capsys.readouterr().out
    assert "frames: 5 processed" in stdout
    assert "inference: cpu, fp32, NCHW, compile off, cuda-graphs off" in stdout


def test_zero_frame_video_writes_nothing_and_succeeds(demo, work, tmp_path, capsys):
    empty = tmp_path / "empty.avi"  # what cv2.VideoWriter leaves when given no frame
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 64))
    writer.release()
    out = tmp_path / "out.mp4"
    assert (
        demo.main(
            args(work, "segmentation", "--source", str(empty), "--output", str(out), "--no-display")
        )
        == 0
    )
    assert "source has no frames" in capsys.readouterr().out
    assert not out.exists()


def test_display_is_off_without_gui_support(demo):
    shown, why = demo.display_available(no_display=False)
    if "NONE" not in cv2.getBuildInformation().split("GUI:", 1)[1].splitlines()[0]:
        pytest.skip("this OpenCV has GUI support")
    assert not shown and "no GUI support" in why


@pytest.mark.parametrize("source", ["missing.mp4", "unreadable"])
def test_bad_source_is_one_error_line(demo, work, tmp_path, capsys, source):
    if source == "unreadable":  # an mp4 without a video track (cv2.VideoWriter given no frame)
        source = str(tmp_path / "empty.mp4")
        cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 64)).release()
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: demo.main(args(work, "segmentation", "--source", source, "--no-display")))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot open video source '{source}'")


def test_missing_source_exits_2_without_traceback(work):
    result = subprocess.run(
        [sys.executable, str(TOOL), *args(work, "segmentation", "--source", "missing.mp4")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: cannot open video source 'missing.mp4': no such file"
    ]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["ctrl-c", "sigterm"]
)
def test_signal_stops_cleanly_and_finalizes_the_output(work, tmp_path, sig, code):
    source = tmp_path / "long.avi"  # far too long to finish before the signal comes
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 64))
    for frame in np.random.default_rng(0).integers(0, 256, (8, 64, 128, 3), dtype=np.uint8):
        for _ in range(125):
            writer.write(frame)
    writer.release()
    out = tmp_path / "out.mp4"
    child = subprocess.Popen(
        [
            sys.executable,
            str(TOOL),
            *args(
                work, "segmentation", "--source", str(source), "--output", str(out), "--no-display"
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if out.exists() and out.stat().st_size > 0:
            break
        time.sleep(0.05)
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "stopped after" in stdout and "end-to-end" in stdout
    written = int(stdout.split("wrote ")[1].split(" frames")[0])
    assert 0 < written < 1000
    assert len(read_back(out)) == written  # the file was finalized
