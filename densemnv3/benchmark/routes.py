"""Every installed route of a model, timed in one interleaved run against torchvision eager fp32:
our PyTorch inference path, and the exported files (fp32 ONNX, int8 ONNX, fp32 and int8
ExecuTorch ``.pte``) in every runtime that reads them (onnxruntime, OpenVINO, ExecuTorch).

``--model lraspp_large --routes`` (or any model case). Each route is timed twice, network alone
and end to end. LR-ASPP's network is what each route's graph outputs (ours: the logits at stride 8,
``network``; torchvision's: at the input size), its end the label map at the input size (ours:
:func:`~densemnv3.inference.upsampled_labels`, as the Predictor; torchvision's users take
``out.argmax(1)``): the end-to-end ratio is the like-for-like one. SSDLite's end is
the detections (forward + decode + NMS at ``--det-score-thresh``). The weights are the fp32
case's (torchvision's random weights with calibrated BatchNorm, loaded into ours); the int8 files
are calibrated on a few random images of the timed size. ``.pte`` programs take batch 1 only (a
fixed input), so they are timed at batch 1. The record also names the route ``--runtime auto``
takes for each exported file here: the fastest runtime that reads it.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from densemnv3.errors import ExportCheckError
from densemnv3.export.onnx_export import export_model
from densemnv3.export.quantize import export_for_quantization, quantize_model
from densemnv3.export.sizes import min_input_size, size_metadata
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.inference.upsample import upsampled_labels
from densemnv3.runtimes import engine_class, engines_for, exported_model, read_metadata

from .models import random_pair
from .reference import tv_network
from .timing import time_interleaved

__all__ = [
    "bench_routes",
    "drive_frames",
    "file_metadata",
    "format_routes",
    "route_files",
    "trained_model",
]

CALIBRATION_IMAGES = 4


def route_files(
    ours: torch.nn.Module,
    folder: Path,
    size: tuple[int, int],
    task: str,
    metadata: dict | None = None,
    images: torch.Tensor | None = None,
    pte: bool = True,
) -> dict[str, Path]:
    """The exported files of ``ours`` (a ``task`` model) at ``size`` in ``folder``, by name
    (``fp32.onnx``, ``int8.onnx``; with OpenVINO installed ``int8_openvino.onnx``, the int8 graph
    shaped for it; with ExecuTorch installed and ``pte``, ``fp32.pte``, ``int8.pte``),
    recording ``metadata`` (``config`` and ``arch`` make them loadable with ``--weights``); the int8
    files calibrated on ``images`` (default: random ones)."""
    metadata = {**(metadata or {}), "task": task}
    gen = torch.Generator().manual_seed(1)
    calibration = (
        [torch.randn(1, 3, *size, generator=gen) for _ in range(CALIBRATION_IMAGES)]
        if images is None
        else list(images.split(1))
    )
    files = {"fp32.onnx": folder / "fp32.onnx", "int8.onnx": folder / "int8.onnx"}
    if task != "segmentation":  # the raw graph, post-processed by ours as the int8 file is
        form = export_for_quantization(ours, files["fp32.onnx"], size)
        _with_metadata(
            files["fp32.onnx"], {**metadata, "outputs": form}, size, min_input_size(ours, size)
        )
    else:  # tools/export.py's file
        export_model(
            ours,
            files["fp32.onnx"],
            fmt="onnx",
            input_size=size,
            metadata=metadata,
            check_batches=(1,),
        )
    forms = ["onnxruntime"] + (["openvino"] if engine_class("openvino").installed() else [])
    for form in forms:  # int8.onnx: onnxruntime's graph; int8_openvino.onnx: OpenVINO's
        name = "int8.onnx" if form == "onnxruntime" else f"int8_{form}.onnx"
        files[name] = folder / name
        quantize_model(
            ours,
            files[name],
            calibration=iter(calibration),
            num_images=CALIBRATION_IMAGES,
            input_size=size,
            progress=False,
            metadata=metadata,
            runtime=form,
        )
    if pte and engine_class("executorch").installed():
        from densemnv3.export.pte import export_executorch

        for precision in ("fp32", "int8"):
            files[f"{precision}.pte"] = folder / f"{precision}.pte"
            try:
                export_executorch(
                    ours,
                    files[f"{precision}.pte"],
                    input_size=size,
                    metadata=metadata,
                    int8=precision == "int8",
                    calibration=iter(calibration),
                    num_images=CALIBRATION_IMAGES,
                )
            except ExportCheckError:
                # written, and timed all the same: int8 agreement on random weights and random
                # calibration says nothing (the int8 ONNX file is not checked here either)
                if precision == "fp32":
                    raise
    return files


def _with_metadata(
    path: Path, metadata: dict, size: tuple[int, int], min_size: tuple[int, int] | None
) -> None:
    """Record ``metadata`` and the sizes the file takes in the raw fp32 graph of
    :func:`export_for_quantization`."""
    import onnx

    from densemnv3.runtimes import write_metadata

    proto = onnx.load(str(path))
    write_metadata(proto, {**metadata, "precision": "fp32", **size_metadata(size, min_size)})
    onnx.save(proto, str(path))


def file_metadata(path: Path, detection: bool) -> dict:
    """The metadata an exported ``.onnx`` or ``.pte`` file records, over what its name and task
    say."""
    if path.suffix == ".pte":
        from densemnv3.checkpoint.pte import read_pte_metadata

        meta = read_pte_metadata(path)
    else:
        meta = read_metadata(path)
    fallback = {
        "task": "detection" if detection else "segmentation",
        "outputs": "raw" if detection else "logits_raw",
        "precision": path.stem,
    }
    return fallback | meta


def bench_routes(case: str, size: tuple[int, int], batch: int, args, device: torch.device) -> dict:
    """Median ms of every route, network alone and end to end, interleaved with torchvision's."""
    if device.type != "cpu":
        raise SystemExit("--routes times the CPU runtimes; use --device cpu")
    detection = case.startswith("ssdlite")
    gen = torch.Generator().manual_seed(0)
    size, tv, ours, same_weights = random_pair(case, size, device, gen, args.cfg)
    trained = getattr(args, "weights", None) if not detection else None
    if trained:  # ours trained, on frames of the synthetic drive: label maps with real boundaries
        ours, same_weights = trained_model(trained, case), False
    if detection:
        tv.score_thresh = ours.score_thresh = args.det_score_thresh
        images01 = torch.rand(batch, 3, *size, generator=gen)
        x = (images01 - 0.5) / 0.5
        tv_images = list(images01)
        fns = {"torchvision eager fp32": (lambda: tv_network(tv, x), lambda: tv(tv_images))}
    else:
        x = drive_frames(size, batch) if trained else torch.randn(batch, 3, *size, generator=gen)
        fns = {"torchvision eager fp32": (lambda: tv(x)["out"], lambda: tv(x)["out"].argmax(1))}
    torch_path = prepare_for_inference(copy.deepcopy(ours), channels_last=True)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    if detection:
        fns["torch fp32 (ours)"] = (lambda: torch_path.predict_raw(x_cl), lambda: torch_path(x_cl))
    else:
        fns["torch fp32 (ours)"] = (
            lambda: torch_path.network(x_cl),
            lambda: upsampled_labels(torch_path.network(x_cl), size),
        )
    skipped, exported = [], {}
    with tempfile.TemporaryDirectory(prefix="densemnv3-bench-routes-") as tmp:
        files = route_files(
            ours,
            Path(tmp),
            size,
            "detection" if detection else "segmentation",
            images=x if trained else None,
        )
        for name, path in files.items():
            for engine in engines_for(path.suffix.lstrip(".")):
                route = f"{engine.name} {name}"
                if not engine.installed():
                    skipped.append(f"{route} (pip install densemnv3[{engine.extra}])")
                    continue
                if path.suffix == ".pte" and batch != 1:
                    skipped.append(f"{route} (a .pte takes batch 1)")
                    continue
                meta = file_metadata(path, detection)
                model = exported_model(path, meta, ours, engine)
                if not engine.inaccurate(
                    meta
                ):  # as --runtime auto: never a route that scores below PyTorch
                    exported.setdefault(name, []).append(route)
                if detection:
                    fns[route] = (lambda m=model: m.predict_raw(x), lambda m=model: m(x))
                else:
                    fns[route] = (
                        lambda m=model: m.network(x),
                        lambda m=model: upsampled_labels(m.network(x), size),
                    )
        timed = {
            f"{name}|{part}": fn
            for name, pair in fns.items()
            for part, fn in zip(("net", "e2e"), pair)
        }
        seconds = time_interleaved(timed, args.iters, args.warmup, device)
    tv_net, tv_e2e = (seconds[f"torchvision eager fp32|{p}"] for p in ("net", "e2e"))
    routes = [
        {
            "route": name,
            "net_ms": seconds[f"{name}|net"] * 1e3,
            "e2e_ms": seconds[f"{name}|e2e"] * 1e3,
            "net_ratio": seconds[f"{name}|net"] / tv_net,
            "e2e_ratio": seconds[f"{name}|e2e"] / tv_e2e,
        }
        for name in fns
    ]
    by_name = {r["route"]: r for r in routes}
    defaults = {
        name: min(names, key=lambda n: by_name[n]["net_ms"]) for name, names in exported.items()
    }
    return {
        "case": f"{case} routes" + (f" (ours: {trained})" if trained else ""),
        "input": f"{size[0]}x{size[1]}",
        "batch": batch,
        "routes": routes,
        "auto": defaults,
        "skipped": skipped,
        "same_weights": same_weights,
        "score_thresh": args.det_score_thresh if detection else None,
    }


def trained_model(weights: str, case: str) -> torch.nn.Module:
    """The segmentation checkpoint ``weights`` as ours (its model must be the ``case``'s)."""
    from densemnv3.errors import UserError
    from densemnv3.load import load_model

    from .models import case_of

    loaded = load_model(None, weights, pytorch="--routes --weights")
    if loaded.cfg.task != "segmentation" or case_of(loaded.cfg.model.name) != case:
        raise UserError(
            f"{weights}: a {loaded.cfg.model.name} {loaded.cfg.task} model; --routes --weights "
            f"takes a segmentation checkpoint of --model {case}"
        )
    return loaded.model.eval()


def drive_frames(size: tuple[int, int], batch: int) -> torch.Tensor:
    """``batch`` frames of the synthetic drive at ``size``, normalised as by the eval transform."""
    import cv2

    from densemnv3.data.synthetic import synthetic_video_frames
    from densemnv3.data.transforms import NormalizeToTensor

    normalise = NormalizeToTensor()
    frames = synthetic_video_frames(frames=batch, size=size)
    return torch.stack(
        [normalise(image=cv2.cvtColor(f, cv2.COLOR_BGR2RGB))["image"] for f in frames]
    )


def format_routes(r: dict) -> str:
    """A markdown table: each route's ms and its time as a fraction of torchvision's."""
    end = "detections" if r["score_thresh"] is not None else "label map"
    lines = [
        f"{r['case']}, {r['input']}, batch {r['batch']} (end to end: to the {end}"
        + (f", score threshold {r['score_thresh']}" if r["score_thresh"] is not None else "")
        + ")",
        "| route | network ms | x torchvision | end to end ms | x torchvision |",
        "|---|---|---|---|---|",
    ]
    auto = {route: name for name, route in r["auto"].items()}
    for row in r["routes"]:
        mark = f" (auto for {auto[row['route']]})" if row["route"] in auto else ""
        lines.append(
            f"| {row['route']}{mark} | {row['net_ms']:.1f} | {row['net_ratio']:.2f} "
            f"| {row['e2e_ms']:.1f} | {row['e2e_ratio']:.2f} |"
        )
    if r["skipped"]:
        lines.append("not timed: " + "; ".join(r["skipped"]))
    return "\n".join(lines)
