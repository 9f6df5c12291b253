"""The eval tools' prediction modes: ``--tta`` (scales and flips) and ``eval.mode=slide``, their
per-image time in ``metrics.json``, and one-line errors for what cannot be read."""

import json

import pytest

from densemnv3.cli import eval_det, eval_seg


def _eval(run_in_process, checkpoint, out, *args):
    code, stdout, err = run_in_process(
        eval_seg.main,
        [
            "--weights",
            str(checkpoint),
            "--out",
            str(out),
            "--device",
            "cpu",
            *args,
            "--set",
            "data.workers=0",
        ],
    )
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text()), stdout


def test_tta_and_slide_are_chosen_timed_and_reported(
    fitted_seg_checkpoint, tmp_path, run_in_process
):
    plain, out = _eval(run_in_process, fitted_seg_checkpoint, tmp_path / "plain")
    assert plain["eval_mode"] == "whole" and plain["ms_per_image"] > 0
    assert "prediction: whole:" in out and "ms per image" in out

    flip, out = _eval(run_in_process, fitted_seg_checkpoint, tmp_path / "flip", "--tta", "flip")
    assert (
        flip["eval_mode"] == "whole, flip" and flip["images_evaluated"] == plain["images_evaluated"]
    )
    assert 0 < flip["mIoU"] < 1 and "prediction: whole, flip:" in out

    multi, _ = _eval(
        run_in_process,
        fitted_seg_checkpoint,
        tmp_path / "ms",
        "--tta",
        "scales=0.75,1.0,1.25",
        "flip",
    )
    assert multi["eval_mode"] == "whole, 3 scales 0.75-1.25 + flip"

    # one window covering the 64x128 frames is the whole-image prediction: the same metrics
    slide, out = _eval(
        run_in_process,
        fitted_seg_checkpoint,
        tmp_path / "slide",
        "--set",
        "eval.mode=slide",
        "eval.crop=[64,128]",
    )
    assert slide["eval_mode"] == "slide 64x128 every 43x85"
    for key in ("mIoU", "per_class_iou", "iIoU", "mIoU_category", "pixel_accuracy"):
        assert slide[key] == plain[key], key

    # windows smaller than the frame: overlapping logits averaged, a prediction of its own
    windows, _ = _eval(
        run_in_process,
        fitted_seg_checkpoint,
        tmp_path / "windows",
        "--set",
        "eval.mode=slide",
        "eval.crop=[32,64]",
    )
    assert windows["eval_mode"] == "slide 32x64 every 21x43" and 0 < windows["mIoU"] < 1


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--tta", "scales=a"], ["--tta scales=a", "scales=S[,S...]"]),
        (["--tta", "flp"], ["'flp'", "did you mean 'flip'"]),
        (["--set", "eval.mode=sliding"], ["eval.mode"]),
        (
            ["--set", "eval.mode=slide", "eval.stride=[100,100]", "eval.crop=[32,64]"],
            ["eval.stride"],
        ),
    ],
)
def test_bad_modes_are_one_line_errors(
    fitted_seg_checkpoint, tmp_path, run_in_process, assert_one_error_line, args, needles
):
    code, _, err = run_in_process(
        eval_seg.main,
        ["--weights", str(fitted_seg_checkpoint), "--out", str(tmp_path), "--device", "cpu", *args],
    )
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_detection_tool_has_no_tta(export_checkpoints, run_in_process):
    code, _, err = run_in_process(
        eval_det.main,
        [
            str(export_checkpoints / "det_config.py"),
            "--weights",
            str(export_checkpoints / "det.pt"),
            "--tta",
            "flip",
        ],
    )
    assert code == 2 and "unrecognized arguments: --tta" in err
