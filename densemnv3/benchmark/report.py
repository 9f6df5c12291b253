"""What the benchmark prints and writes: the markdown table of the timed cases (ratio = ours
throughput / torchvision throughput, with notes on the options), the ``train_seg`` lines, the
machine description, the JSON report."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from .multitask import MULTITASK_CASES, format_multitask
from .train import TRAIN_CASES


def format_table(results: list[dict]) -> str:
    """A markdown table of the results (ratio = ours throughput / torchvision throughput)."""
    head = (
        "| case | input | batch | precision | ours ms | torchvision ms | ours img/s "
        "| torchvision img/s | ratio | GFLOPs/img | params M | max abs diff (rel) | notes |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        gflops = f"{r['gflops_per_image']:.2f}" if "gflops_per_image" in r else "-"
        params = f"{r['params'] / 1e6:.3f}" if "params" in r else "-"
        diff = "-"
        if "max_abs_diff" in r:
            flag = {True: "", False: " MISMATCH", None: " not the same model"}[r["check_ok"]]
            diff = f"{r['max_abs_diff']:.1e} ({r['rel_diff']:.1e}{flag})"
            if "rel_rms" in r:
                diff = f"{r['max_abs_diff']:.1e} (rel RMS {r['rel_rms']:.1e}{flag})"
        lines.append(
            f"| {r['case']} | {r['input']} | {r['batch']} | {r['precision']} | {r['ours_ms']:.1f} "
            f"| {r['tv_ms']:.1f} | {r['ours_img_s']:.2f} | {r['tv_img_s']:.2f} | {r['ratio']:.2f}x "
            f"| {gflops} | {params} | {diff} | {_notes(r)} |"
        )
        if "ours_net_ms" in r:
            lines.append(
                f"| {r['case']} (network only) | {r['input']} | {r['batch']} | {r['precision']} "
                f"| {r['ours_net_ms']:.1f} | {r['tv_net_ms']:.1f} "
                f"| {r['batch'] / r['ours_net_ms'] * 1e3:.2f} "
                f"| {r['batch'] / r['tv_net_ms'] * 1e3:.2f} | {r['net_ratio']:.2f}x | | | "
                f"| no postprocess |"
            )
    return "\n".join(lines)


def _notes(r: dict) -> str:
    notes = []
    options = r.get("ours_options", {})
    if "int8_speedup" in r:
        notes.append(
            f"ours: int8 in onnxruntime (quantized in {r['quantize_seconds']:.0f} s); our fp32 "
            f"path {r['ours_fp32_ms']:.1f} ms, int8 {r['int8_speedup']:.2f}x faster"
        )
    on = [k for k in ("channels_last", "cuda_graphs") if options.get(k)]
    if options.get("compile"):
        on.append(f"compile={options['compile']} ({r['compile_seconds']:.0f} s)")
    if options.get("fuse_bn") is False:
        on.append("no BN folding")
    if "ours_uncached_ms" in r:
        on.append(f"decoded cache (decoding the PNGs: {r['ours_uncached_ms']:.1f} ms)")
    if options.get("config"):
        on.insert(0, f"{options['config']}" + ("" if r.get("same_weights") else " (own weights)"))
    if on:
        notes.append("ours: " + ", ".join(on))
    if r.get("tv_options", {}).get("precision", "fp32") != "fp32" or r.get("tv_options", {}).get(
        "channels_last"
    ):
        notes.append("torchvision: same options")
    if "candidates_per_image" in r:
        notes.append(
            f"{r['candidates_per_image']:.0f} candidates/img above {options['score_thresh']:g}"
        )
    if options.get("nms_impl"):
        notes.append(f"{options['nms_impl']} NMS")
    return "; ".join(notes)


def machine_info(device: torch.device) -> dict:
    """The CPU model, torch threads, versions and device (and GPU name) the figures come from."""
    cpu = platform.processor()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import torchvision

    info = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_train(r: dict) -> str:
    """``train_seg``: one line per loader variant (images/s on the device alone, fed by the
    loader, ratio); ``train_step_lraspp``: our step against torchvision's."""
    if r["case"] == "train_step_lraspp":
        return (
            f"{r['case']} {r['input']} batch {r['batch']} {r['precision']}: ours "
            f"{r['ours_ms']:.1f} ms, torchvision {r['tv_ms']:.1f} ms per step, ratio "
            f"{r['ratio']:.2f}x (torchvision / ours)"
        )
    lines = []
    for name in ("loader", "cached"):
        if f"{name}_img_s" in r:
            lines.append(
                f"{r['case']} {r['input']} batch {r['batch']} {r['precision']}, {r['workers']} "
                f"workers{', decoded cache' if name == 'cached' or r['decoded_cache'] else ''}: "
                f"on-device step {r['device_img_s']:.1f} img/s, loader-fed "
                f"{r[f'{name}_img_s']:.1f} img/s, ratio {r[f'{name}_ratio']:.2f}"
            )
    return "\n".join(lines)


def format_summary(results: list[dict]) -> str:
    """The table of the inference and data cases, then the lines of the ``train_seg`` and the
    multi-task ones."""
    inference_and_data = [r for r in results if r["case"] not in (*TRAIN_CASES, *MULTITASK_CASES)]
    return "\n".join(
        [format_table(inference_and_data)] * bool(inference_and_data)
        + [format_train(r) for r in results if r["case"] in TRAIN_CASES]
        + [format_multitask(r) for r in results if r["case"] in MULTITASK_CASES]
    )


def machine_line(info: dict, args) -> str:
    """The first line printed: the machine and how many calls are timed."""
    return (
        f"{info.get('gpu', info['cpu'])}, {info['threads']} threads, torch {info['torch']}; "
        f"{args.iters} timed calls after {args.warmup} warm-up, interleaved"
    )


def write_report(path: str, info: dict, args, results: list[dict]) -> None:
    """The machine, the arguments (less the loaded config) and the results, as JSON."""
    options = {k: v for k, v in vars(args).items() if k != "cfg"}
    report = {"machine": info, "args": options, "results": results}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))
