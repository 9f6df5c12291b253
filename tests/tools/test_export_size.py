"""A fixed-size file (``.pte``) is made at the size its model is evaluated at, scores as its
checkpoint there, and a tool that runs it on frames of another size says so once; a ``.pte`` of
another model carrying a real one's metadata is refused in one line."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("executorch")
pytestmark = [pytest.mark.executorch, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def default_pte(fitted_seg_checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """The fitted checkpoint (128x256 crops, evaluated on its 64x128 frames) exported to a .pte
    without --input-size, and what the export printed."""
    import contextlib
    import io

    from densemnv3.cli.export import main

    out = tmp_path_factory.mktemp("pte_size") / "seg.pte"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            assert (
                main(
                    [
                        "--weights",
                        str(fitted_seg_checkpoint),
                        "--format",
                        "executorch",
                        "--out",
                        str(out),
                    ]
                )
                == 0
            )
    finally:
        torch.set_num_threads(threads)
    return out, printed.getvalue()


@pytest.mark.slow
def test_a_default_pte_is_made_at_the_eval_size_and_scores_as_the_checkpoint(
    default_pte, fitted_seg_checkpoint, run_in_process, tmp_path
):
    from densemnv3.checkpoint.pte import read_pte_metadata
    from densemnv3.cli.eval_seg import main

    pte, printed = default_pte
    assert (
        "input size 64x128: the frames of split 'val', which the model is evaluated at" in printed
    )
    assert "input (1, 3, 64, 128) fixed" in printed and "-> OK" in printed
    assert read_pte_metadata(pte)["input_size"] == (64, 128)  # not the 128x256 training crop
    scores = {}
    for name, weights in (("pte", pte), ("pt", fitted_seg_checkpoint)):
        code, out, err = run_in_process(
            main, ["--weights", str(weights), "--out", str(tmp_path / name)]
        )
        assert code == 0, err
        assert "note:" not in out  # the frames are the file's size: nothing resized
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())["mIoU"]
    assert scores["pte"] == pytest.approx(
        scores["pt"], abs=0.005
    )  # within 0.5 point (measured: equal)


@pytest.mark.slow
def test_the_demo_says_once_that_it_resizes_frames_to_a_fixed_size_file(
    default_pte, run_in_process, tmp_path
):
    from densemnv3.cli.demo import main
    from densemnv3.data.synthetic import make_synthetic_video

    pte, _ = default_pte
    note = (
        f"note: {pte} takes 64x128 inputs only (exported at a fixed size): the 128x256 frames are "
        f"resized to it, its predictions scaled back to the frame (export at the frames' size, "
        f"tools/export.py --input-size 128 256, to run them as they are)"
    )
    larger = make_synthetic_video(tmp_path / "large.avi", frames=3, size=(128, 256))
    code, out, err = run_in_process(
        main, ["--weights", str(pte), "--source", str(larger), "--no-display", "--threads", "1"]
    )
    assert code == 0, err
    assert out.count(note) == 1 and out.count("note:") == 1, out
    same = make_synthetic_video(tmp_path / "same.avi", frames=2, size=(64, 128))
    code, out, err = run_in_process(
        main, ["--weights", str(pte), "--source", str(same), "--no-display", "--threads", "1"]
    )
    assert code == 0 and "note:" not in out, (out, err)
    code, _, err = run_in_process(
        main,
        ["--weights", str(pte), "--source", str(same), "--no-display", "--input-size", "32", "64"],
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (
        f"error: --input-size 32 64: {pte} takes 64x128 inputs only (exported at a fixed "
        f"size); drop --input-size (frames are resized to it), or export at that size "
        f"(tools/export.py --input-size)"
    )


class _FullSize(nn.Module):
    """Logits upsampled to the input in the program: not the stride 8 a densemnv3 file declares."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 19, 3, stride=8, padding=1)

    def forward(self, x):
        return nn.functional.interpolate(self.conv(x), size=x.shape[-2:], mode="bilinear")


@pytest.mark.slow
@pytest.mark.parametrize(
    "size,words",
    [
        (
            (64, 128),
            "output 'logits' is [1, 19, 64, 128], its metadata (outputs: logits_raw, 19 classes, "
            "input 64x128) implies [N, 19, 8, 16]",
        ),
        (
            (32, 32),
            "its input 'images' is [1, 3, 32, 32], its metadata (outputs: logits_raw, 19 classes, "
            "input 64x128) implies [N, 3, 64, 128]",
        ),
    ],
)
def test_a_foreign_pte_with_copied_metadata_is_one_line(
    default_pte, run_in_process, tmp_path, size, words
):
    from densemnv3.checkpoint.pte import pte_metadata_method, read_pte_metadata
    from densemnv3.cli.eval_seg import main
    from densemnv3.export.pte import lower_to_xnnpack

    pte, _ = default_pte
    foreign = tmp_path / "foreign.pte"
    methods = pte_metadata_method(read_pte_metadata(pte))
    foreign.write_bytes(lower_to_xnnpack(_FullSize().eval(), size, constant_methods=methods).buffer)
    code, out, err = run_in_process(
        main, ["--weights", str(foreign), "--out", str(tmp_path / "out")]
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (
        f"error: {foreign}: its graph is not the model its densemnv3 metadata describes: "
        f"{words} (another model's file with copied metadata?); export the checkpoint "
        f"with tools/export.py --format executorch"
    )
    assert "mIoU" not in out


def test_without_frames_the_size_is_the_synthetic_sets_else_the_crop_with_a_note(tmp_path, capsys):
    from densemnv3.cli.export import _eval_frame_size
    from densemnv3.config import SyntheticConfig, load_config

    config = Path(__file__).resolve().parents[2] / "configs" / "lraspp_synthetic.py"
    cfg = load_config(config, [f"data.root={tmp_path / 'none'}"])
    cfg.data.synthetic = SyntheticConfig(size=(96, 192))
    assert _eval_frame_size(cfg) == (96, 192)
    assert "input size 96x192: data.synthetic.size" in capsys.readouterr().out
    cfg.data.synthetic = None
    assert _eval_frame_size(cfg) == (128, 256)
    assert capsys.readouterr().out.startswith(
        f"note: no frames at {tmp_path / 'none'} to read the "
        f"evaluation size from: the file takes the training crop, "
        f"128x256"
    )
