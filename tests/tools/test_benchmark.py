"""tools/benchmark.py --quick: every case runs and reports ours vs torchvision."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # --threads sets it for the process


def test_quick_run_writes_json_with_positive_ratios(bench_tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "lraspp_small",
                "ssdlite_small",
                "data_seg",
                "--channels-last",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert {"cpu", "threads", "torch", "device"} <= report["machine"].keys()
    results = {r["case"]: r for r in report["results"]}
    assert list(results) == ["lraspp_small", "ssdlite_small", "data_seg"]
    for r in results.values():
        assert {
            "input",
            "batch",
            "precision",
            "ours_ms",
            "tv_ms",
            "ours_img_s",
            "tv_img_s",
            "ratio",
        } <= r.keys()
        assert r["ratio"] > 0 and r["ours_img_s"] > 0 and r["tv_img_s"] > 0
        assert r["ratio"] == pytest.approx(r["ours_img_s"] / r["tv_img_s"])
    for case in ("lraspp_small", "ssdlite_small"):  # same weights: fp32 outputs agree
        r = results[case]
        assert r["check_ok"] and r["max_abs_diff"] < 1e-3 * r["ref_max_abs"]
        assert r["ours_options"]["channels_last"] and not r["tv_options"]["channels_last"]
        assert r["params"] > 1e6 and r["gflops_per_image"] > 0
    assert (
        results["ssdlite_small"]["input"] == "320x320" and results["ssdlite_small"]["net_ratio"] > 0
    )
    assert results["ssdlite_small"]["ours_options"]["nms_impl"] == "per_image"  # auto, on CPU
    data = results["data_seg"]  # ours reads the decoded cache; decoding the PNGs is timed beside it
    assert data["ours_options"]["decoded_cache"] and data["ours_uncached_ms"] > 0
    table = capsys.readouterr().out
    assert (
        "| lraspp_small | 64x128 | 1 | fp32 |" in table and "ssdlite_small (network only)" in table
    )


def test_bad_size_is_a_user_error(bench_tool):
    from densemnv3.errors import UserError

    with pytest.raises(UserError, match="expected HxW"):
        bench_tool.main(["--quick", "--sizes", "512by1024"])


def test_config_model_is_compared_with_torchvision(bench_tool, tmp_path):
    """--config: ours is the config's model (here the paper's pool), timed against torchvision's."""
    out = tmp_path / "bench.json"
    config = ROOT / "configs" / "lraspp_mnv3small_cityscapes.py"
    assert (
        bench_tool.main(["--quick", "--config", str(config), "--threads", "1", "--json", str(out)])
        == 0
    )
    (result,) = json.loads(out.read_text())["results"]
    assert result["case"] == "lraspp_small" and result["ratio"] > 0
    assert result["same_weights"] and result["check_ok"] is None  # another gate: not comparable
    assert result["ours_options"]["config"] == str(config)


def test_variants_each_run_against_torchvision_fp32(bench_tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "lraspp_small",
                "--variants",
                "default",
                "fp32+nchw",
                "bf16",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())["results"]
    assert [(r["precision"], r["ours_options"]["memory_format"]) for r in results] == [
        ("fp32", "channels_last"),
        ("fp32", "nchw"),
        ("bf16", "channels_last"),
    ]
    for r in (
        results
    ):  # the baseline is torchvision eager fp32 every time, and ours is checked against it
        assert r["tv_options"] == {"precision": "fp32", "channels_last": False}
        assert r["check_ok"] and r["rel_diff"] <= r["tolerance"]
    printed = capsys.readouterr().out
    assert "inference: cpu, fp32, channels_last, compile off, cuda-graphs off" in printed
    assert "inference: cpu, fp32, NCHW, compile off, cuda-graphs off" in printed
    assert "inference: cpu, bf16, channels_last, compile off, cuda-graphs off" in printed


@pytest.mark.slow
def test_int8_is_timed_against_our_fp32_path_and_torchvision(bench_tool, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "lraspp_small",
                "--variants",
                "int8",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert r["precision"] == "int8" and r["ours_options"]["runtime"] == "onnxruntime"
    assert r["ours_ms"] > 0 and r["ours_fp32_ms"] > 0 and r["tv_ms"] > 0  # all three, one run
    assert r["int8_speedup"] == pytest.approx(r["ours_fp32_ms"] / r["ours_ms"])
    assert r["check_ok"] and r["rel_rms"] <= r["tolerance"]
    assert "ours: int8 in onnxruntime" in capsys.readouterr().out


def test_variants_exclude_the_single_options(bench_tool):
    from densemnv3.errors import UserError

    with pytest.raises(UserError, match="--variants names every option"):
        bench_tool.main(["--quick", "--variants", "default", "--precision", "fp32"])


def test_det_nms_selects_ours_nms_path(bench_tool, tmp_path):
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "ssdlite_small",
                "--det-nms",
                "batched",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (result,) = json.loads(out.read_text())["results"]
    assert result["ours_options"]["nms_impl"] == "batched" and result["ratio"] > 0


def test_train_seg_reports_device_and_loader_fed_rates(bench_tool, tmp_path, capsys):
    out = tmp_path / "train.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "train_seg",
                "--workers",
                "1",
                "--decoded-cache",
                "--synthetic-images",
                "4",
                "--iters",
                "2",
                "--set",
                "model.name=lraspp_mobilenet_v3_small",
                "model.options={}",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert r["case"] == "train_seg" and r["input"] == "synthetic 64x128 -> 32x64"
    assert (r["batch"], r["workers"], r["precision"], r["decoded_cache"]) == (2, 1, "fp32", None)
    for rate in ("device_img_s", "loader_img_s", "cached_img_s"):
        assert 0 < r[rate] < 1e4
    for name in ("loader", "cached"):
        assert r[f"{name}_ratio"] == pytest.approx(r[f"{name}_img_s"] / r["device_img_s"])
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.endswith(f"ratio {r['cached_ratio']:.2f}") and "decoded cache" in line
        for line in lines
    )


def test_train_step_is_timed_against_torchvisions_on_the_same_weights(bench_tool, tmp_path, capsys):
    out = tmp_path / "step.json"
    assert (
        bench_tool.main(
            ["--quick", "--model", "train_step_lraspp", "--threads", "1", "--json", str(out)]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert (r["case"], r["input"], r["batch"]) == ("train_step_lraspp", "64x128", 2)
    assert (
        r["ours_ms"] > 0
        and r["tv_ms"] > 0
        and r["ratio"] == pytest.approx(r["tv_ms"] / r["ours_ms"])
    )
    assert r["ours_loss"] == pytest.approx(r["tv_loss"], rel=1e-5) and r["ours_loss"] > 1.0
    assert f"ratio {r['ratio']:.2f}x (torchvision / ours)" in capsys.readouterr().out


def test_multitask_is_timed_against_seg_and_det_one_after_the_other(bench_tool, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            ["--quick", "--model", "multitask_small", "--threads", "1", "--json", str(out)]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert (r["case"], r["input"], r["batch"], r["precision"]) == (
        "multitask_small",
        "64x128",
        1,
        "fp32",
    )
    assert r["ratio"] == pytest.approx(r["multitask_ms"] / r["separate_ms"]) and r["ratio"] > 0
    assert {m["model"] for m in r["models"].values()} == {
        "multitask_mobilenet_v3_small",
        "lraspp_mobilenet_v3_small",
        "ssdlite320_mobilenet_v3_small",
    }
    assert (
        r["models"]["multitask"]["params"]
        < r["models"]["seg"]["params"] + r["models"]["det"]["params"]
    )
    assert r["ours_options"]["channels_last"]  # the CPU inference path
    assert f"ratio {r['ratio']:.2f} (multi-task / both)" in capsys.readouterr().out


def _only_onnxruntime(monkeypatch):
    """The routes of the exported files in onnxruntime only (each other runtime adds minutes of
    exports and timings; its engines are tested in tests/runtimes)."""
    from densemnv3.runtimes import engine_class

    for name in ("openvino", "executorch"):
        monkeypatch.setattr(engine_class(name), "installed", classmethod(lambda cls: False))


@pytest.mark.slow
def test_routes_time_every_installed_runtime_against_torchvision(
    bench_tool, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("onnxruntime")
    _only_onnxruntime(monkeypatch)
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            ["--quick", "--model", "lraspp_small", "--routes", "--threads", "1", "--json", str(out)]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    routes = {row["route"]: row for row in r["routes"]}
    assert list(routes) == [
        "torchvision eager fp32",
        "torch fp32 (ours)",
        "onnxruntime fp32.onnx",
        "onnxruntime int8.onnx",
    ]
    for row in routes.values():
        assert row["net_ms"] > 0 and row["e2e_ms"] > 0 and row["net_ratio"] > 0
    assert routes["torchvision eager fp32"]["net_ratio"] == 1.0
    assert r["auto"] == {"fp32.onnx": "onnxruntime fp32.onnx", "int8.onnx": "onnxruntime int8.onnx"}
    assert any("openvino" in s and "densemnv3[openvino]" in s for s in r["skipped"])
    table = capsys.readouterr().out
    assert "| onnxruntime int8.onnx (auto for int8.onnx) |" in table


@pytest.mark.slow
def test_routes_with_trained_weights_time_ours_on_drive_frames(
    bench_tool, fitted_seg_checkpoint, tmp_path, monkeypatch
):
    """--weights: ours is the checkpoint (not torchvision's random weights), fed frames of the
    synthetic drive; a checkpoint of another model than --model's is one error."""
    pytest.importorskip("onnxruntime")
    from densemnv3.errors import UserError

    _only_onnxruntime(monkeypatch)
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "lraspp_small",
                "--routes",
                "--threads",
                "1",
                "--weights",
                str(fitted_seg_checkpoint),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert (
        r["case"] == f"lraspp_small routes (ours: {fitted_seg_checkpoint})"
        and r["same_weights"] is False
    )
    assert [row["route"] for row in r["routes"]][-2:] == [
        "onnxruntime fp32.onnx",
        "onnxruntime int8.onnx",
    ]
    with pytest.raises(UserError, match="takes a segmentation checkpoint of --model lraspp_large"):
        bench_tool.main(
            [
                "--quick",
                "--model",
                "lraspp_large",
                "--routes",
                "--threads",
                "1",
                "--weights",
                str(fitted_seg_checkpoint),
            ]
        )


@pytest.mark.slow
def test_routes_mark_as_auto_only_what_auto_takes(bench_tool, tmp_path, capsys, monkeypatch):
    """A runtime that scores a file below PyTorch is timed but never marked auto (as
    ``--runtime auto`` leaves it out: OpenVINO on int8 SSDLite files)."""
    pytest.importorskip("onnxruntime")
    from densemnv3.runtimes import engine_class

    _only_onnxruntime(monkeypatch)
    monkeypatch.setattr(
        engine_class("onnxruntime"),
        "inaccurate",
        classmethod(lambda cls, meta: "below" if meta.get("precision") == "int8" else None),
    )
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            ["--quick", "--model", "lraspp_small", "--routes", "--threads", "1", "--json", str(out)]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert "onnxruntime int8.onnx" in {row["route"] for row in r["routes"]}  # still timed
    assert r["auto"] == {"fp32.onnx": "onnxruntime fp32.onnx"}
    assert "| onnxruntime int8.onnx |" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_case_runs_the_demo_on_every_route(bench_tool, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    _only_onnxruntime(monkeypatch)
    out = tmp_path / "bench.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "demo",
                "--config",
                "lraspp_synthetic",
                "--set",
                "model.name=lraspp_mobilenet_v3_small",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert r["case"] == "demo" and r["input"] == "64x128" and r["video"] == "128x64"
    rows = {row["route"]: row for row in r["routes"]}
    assert list(rows) == ["torch random.pt", "onnxruntime fp32.onnx", "onnxruntime int8.onnx"]
    for row in rows.values():
        assert (
            row["fps"] > 0
            and row["net_fps"] > 0
            and row["ratio"] == pytest.approx(row["fps"] / row["net_fps"])
        )
    assert rows["onnxruntime int8.onnx"]["inference"].startswith(
        "inference: cpu, int8, onnxruntime"
    )


def test_test_time_case_times_each_mode_beside_its_forwards(bench_tool, tmp_path, capsys):
    out = tmp_path / "tt.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "seg_test_time",
                "--sizes",
                "128x256",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert r["case"] == "seg_test_time" and r["crop"] == "64x128" and r["stride"] == "43x85"
    assert r["windows_count"] == 9  # 3 x 3 windows of half the frame, every 2/3 of a window
    for name in ("whole", "slide", "windows", "flip", "ms_flip", "ms_flip_forwards"):
        assert r[f"{name}_ms"] > 0
    assert r["slide_over_windows"] == pytest.approx(r["slide_ms"] / r["windows_ms"])
    assert "6 scales + flip" in capsys.readouterr().out


def test_label_map_case_times_ours_against_torchvisions_way(bench_tool, tmp_path, capsys):
    out = tmp_path / "labels.json"
    assert (
        bench_tool.main(
            [
                "--quick",
                "--model",
                "label_map",
                "--sizes",
                "96x160",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (r,) = json.loads(out.read_text())["results"]
    assert r["case"] == "label_map" and r["scores"] == "19x12x20"
    shares = [row["boundary_share"] for row in r["rows"]]
    assert [row["region"] for row in r["rows"]] == [64, 32, 16] and shares == sorted(
        shares
    )  # finer, more boundaries
    for row in r["rows"]:
        assert row["agreement"] > 0.9999 and row["ratio"] == pytest.approx(
            row["ours_ms"] / row["tv_ms"]
        )
    assert "F.interpolate(...).argmax(1)" in capsys.readouterr().out
