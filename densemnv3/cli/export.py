"""Export a checkpoint to ONNX, TorchScript or ExecuTorch and check the file against PyTorch.

``densemnv3 export [CONFIG] --weights CKPT --format onnx|torchscript|executorch --out FILE
[--set KEY=VALUE ...] [--input-size H W] [--opset N] [--postprocess] [--int8 [--calib-images N]]``

CONFIG may be left out for ``last.pt`` / ``best.pt``, which record the config they were trained
with; a torchvision file needs it.

Input ``images`` (N, 3, H, W), normalised as in training. In an ONNX file N, H and W are all dynamic
(one file for every frame size; LR-ASPP with ``pool='paper'``, whose window depends on the size, is
exported at the input size); a TorchScript file is traced at the input size. Segmentation outputs
``logits`` (N, C, H/8, W/8), the LR-ASPP's logits before its bilinear upsample: take labels at the
frame size from them as ``densemnv3.inference.upsampled_labels`` does (the same labels as ``argmax``
of the upsampled logits, without computing them), or upsample them yourself; ``--full-size-logits``
puts the upsample in the graph, (N, C, H, W). Detection outputs ``boxes`` (N, A, 4) xyxy pixels and
``scores`` (N, A, C) softmax, without NMS (see ``densemnv3.export.onnx_export.SSDLiteExport``), or
with ``--postprocess`` (ONNX) the detections: ``num_detections`` (N,), ``boxes`` (N, D, 4),
``scores`` (N, D), ``labels`` (N, D) after the score threshold, per-class top-k and NMS (ONNX
``NonMaxSuppression``) of the model's settings. The multi-task model outputs ``logits``, ``boxes``
and ``scores`` as above, from one graph and one backbone pass, for a deployment of its own (the
tools run a multi-task model's ``.pte`` and ``tools/quantize.py``'s int8 file).

The file is run (onnxruntime / ``torch.jit.load``) on random input at batch 1 and 3 (and, when
dynamic, at a second size) and compared with PyTorch: above 1e-3 max abs difference, or with
``--postprocess`` any detection not matched (same label, box within 1e-2 px, score within 1e-4),
the tool exits with code 1. An ONNX file records the config, so the eval tools, the Predictor
and the demo run it with ``--weights FILE``. The file is fp32 NCHW whatever the device (the first
line printed says so): reduced precision is chosen in the runtime that runs it (TensorRT
``--fp16``, ...), or int8 by ``tools/quantize.py``.

``--format executorch`` writes a ``.pte`` for phones: lowered to XNNPACK, one ``(1, 3, H, W)`` input
of the export size (the tools resize frames to it, and say so; by default the size the model is
evaluated at: ``data.eval_resize``, else its val frames'), outputs ``logits`` (segmentation, as
above) or ``cls_logits``, ``bbox_regression`` and ``anchors`` (detection, post-processed by the
tools in float), or all four (multi-task; its logits at stride 8). ``--int8`` quantizes it with
XNNPACK's quantizer (weights per channel, activations per tensor, ranges from N training images
through the eval transform, default 32, the same seeded choice as ``tools/quantize.py``). It records
its config like an ONNX file, so the eval tools, the Predictor and the demo run it with
``--weights FILE`` (``--runtime executorch``). It is run in ExecuTorch here and compared with
PyTorch: fp32 on random image-like inputs (a max abs difference above 1e-3 of the output's largest
magnitude fails), int8 on 4 validation images (below 0.9 pixel agreement or above 0.35 relative RMS
error fails); a failed check exits with code 1 and keeps the file.
"""

import argparse
from pathlib import Path

from densemnv3.cli.arguments import (
    CHECKPOINT_HELP,
    add_input_size_argument,
    add_set_argument,
    load_from_args,
    model_parser,
)


def main(argv: list[str] | None = None) -> int:
    parser = model_parser(__doc__, weights_help=CHECKPOINT_HELP)
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript", "executorch"))
    parser.add_argument(
        "--out",
        required=True,
        help="file to write, e.g. lraspp.onnx; a name without a suffix gets the format's "
        "(.onnx, .pt for torchscript, .pte for executorch), another format's suffix "
        "is an error",
    )
    add_set_argument(parser)
    add_input_size_argument(
        parser,
        help="input size (default: data.image_size for detection, data.eval_resize or "
        "data.crop_size for segmentation and multi-task; a .pte, which takes this size only, "
        "without data.eval_resize: the val frames' size, which the model is evaluated at)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: the exporter's)"
    )
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (no folding)")
    parser.add_argument(
        "--postprocess",
        action="store_true",
        help="detection, ONNX: decode, score threshold, per-class NMS and top-k in the graph",
    )
    parser.add_argument(
        "--full-size-logits",
        action="store_true",
        help="segmentation: upsample the logits to the input size in the graph (default: "
        "at stride 8, from which the tools take labels faster)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="executorch: quantize to int8 with XNNPACK's quantizer (for an int8 ONNX file "
        "use tools/quantize.py)",
    )
    parser.add_argument(
        "--calib-images",
        type=int,
        default=None,
        metavar="N",
        help="--int8: training images to calibrate the activation ranges on (default 32)",
    )
    args = parser.parse_args(argv)

    import dataclasses

    from densemnv3.errors import UserError
    from densemnv3.export.onnx_export import export_model, require_onnx
    from densemnv3.export.paths import output_file
    from densemnv3.export.sizes import min_input_size
    from densemnv3.inference.settings import export_settings

    executorch = args.format == "executorch"
    if args.int8 and not executorch:
        raise UserError(
            f"--int8 applies to --format executorch; for an int8 ONNX file use tools/quantize.py "
            f"(drop --int8 for --format {args.format})"
        )
    if args.calib_images is not None and not args.int8:
        raise UserError(
            "--calib-images sets the calibration of --int8; add --int8 or drop --calib-images"
        )
    args.calib_images = 32 if args.calib_images is None else args.calib_images
    if args.calib_images < 1:
        raise UserError(f"--calib-images must be at least 1, got {args.calib_images}")
    if executorch and args.postprocess:
        raise UserError(
            "--postprocess puts SSDLite's NMS in an ONNX graph; a .pte outputs the raw "
            "predictions, which the tools post-process: drop --postprocess"
        )
    out = output_file(args.out, args.format)
    if out != Path(args.out):
        print(f"writing {out} (--out {args.out} does not end in {out.suffix})")
    if args.format == "onnx":
        require_onnx()
    if executorch:
        from densemnv3.export.pte import require_executorch

        require_executorch("--format executorch" + (" --int8" if args.int8 else ""))
    loaded = load_from_args(args, pytorch="export")
    cfg, model = loaded.cfg, loaded.model
    if args.full_size_logits and cfg.task != "segmentation":
        raise UserError(
            f"--full-size-logits applies to segmentation models; {args.weights} is a {cfg.task} "
            f"model: drop --full-size-logits"
        )
    if args.input_size:
        size = tuple(args.input_size)
    elif cfg.task == "detection":
        from densemnv3.data.transforms import detector_input_size

        size = detector_input_size(cfg.data.image_size)
    elif executorch and not cfg.data.eval_resize:
        size = _eval_frame_size(cfg)  # a fixed-size file: the size it is evaluated at
    else:
        size = tuple(cfg.data.eval_resize or cfg.data.crop_size)
        low = min_input_size(model, (10**4, 10**4))
        if not executorch and not cfg.data.eval_resize and any(s < m for s, m in zip(size, low)):
            # evaluated on full frames: trace at a multiple of the crop in the dynamic range
            factor = max(-(-m // s) for s, m in zip(size, low))
            size = (size[0] * factor, size[1] * factor)

    if executorch:
        return _export_executorch(args, cfg, model, size, out)
    print(
        f"{export_settings().describe()} (the file runs on any device; choose fp16 in its runtime)"
    )
    low = min_input_size(model, size) if args.format == "onnx" else None
    dynamic = low is not None
    shape = f"(N, 3, {size[0]}, {size[1]})" + (", H and W dynamic" if dynamic else "")
    if dynamic and low != (32, 32):
        shape += f" from {low[0]}x{low[1]} up"
    print(f"exporting {cfg.model.name} ({args.format}, input {shape}) to {out} ...")
    if args.format == "onnx" and not dynamic:
        print(
            f"note: pool='paper' averages a window clamped to maps smaller than it, so a file "
            f"traced at {size[0]}x{size[1]} takes that size only (from 784x784 up its window is "
            f"fixed and the file takes any size; pool='global' takes any size)"
        )
    if not dynamic and cfg.task != "detection":
        cfg.data.eval_resize = size  # the file takes this size only: the tools resize frames to it
    metadata = {"config": dataclasses.asdict(cfg), "task": cfg.task, "arch": cfg.model.name}
    report = export_model(
        model,
        out,
        fmt=args.format,
        input_size=size,
        opset=args.opset,
        fuse_bn=not args.no_fuse,
        postprocess=args.postprocess,
        full_size_logits=args.full_size_logits,
        metadata=metadata,
    )
    opset = f", opset {report.opset}" if report.opset else ""
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.2f} MiB{opset})")
    print(f"check: {report.summary()}")
    return 0


def _eval_frame_size(cfg) -> tuple[int, int]:
    """The size a segmentation or multi-task model without ``data.eval_resize`` is evaluated at:
    its frames' (the first of the val split, else the synthetic set's size), said in one line;
    the training crop, with a note, when neither is known."""
    from densemnv3.data.io import read_image
    from densemnv3.errors import DataError
    from densemnv3.tasks import build_task

    try:
        dataset = build_task(cfg).dataset(cfg.data.val_split, train=False)
        size = read_image(dataset.samples[0][0]).shape[:2]
        source = f"the frames of split {cfg.data.val_split!r}"
    except (DataError, IndexError, AttributeError):
        size, source = None, None
    if size is None and cfg.data.synthetic is not None:
        size, source = cfg.data.synthetic.size, "data.synthetic.size"
    if size is None:
        h, w = cfg.data.crop_size
        print(
            f"note: no frames at {cfg.data.root} to read the evaluation size from: the file "
            f"takes the training crop, {h}x{w}; give --input-size H W of the frames it will "
            f"run on"
        )
        return int(h), int(w)
    h, w = int(size[0]), int(size[1])
    print(
        f"input size {h}x{w}: {source}, which the model is evaluated at (data.eval_resize is "
        f"unset; --input-size to choose)"
    )
    return h, w


def _export_executorch(
    args: argparse.Namespace, cfg, model, size: tuple[int, int], out: Path
) -> int:
    """``--format executorch``: a ``.pte`` of the fixed ``size``, fp32 or (``--int8``) calibrated
    on training images as ``tools/quantize.py`` chooses them."""
    import dataclasses

    from densemnv3.export.pte import export_executorch

    if cfg.task != "detection":
        cfg.data.eval_resize = size  # the file takes this size only: the tools resize frames to it
    else:
        from densemnv3.data.transforms import detector_input_size

        if detector_input_size(cfg.data.image_size) != size:
            cfg.data.image_size = size  # --input-size: the tools resize frames to the file's size
    precision = "int8" if args.int8 else "fp32"
    calibration, check, n = None, [], 0
    if args.int8:
        from densemnv3.cli.quantize import calibration_set, check_images

        task, train, order = calibration_set(cfg, args.calib_images)
        n, calibration = len(order), (train[i][0] for i in order)
        check = check_images(task, cfg)
        print(
            f"int8: calibrating on {n} images of split {cfg.data.train_split!r} (XNNPACK "
            f"quantizer, per-channel weights), checking on {len(check)} of split "
            f"{cfg.data.val_split!r}"
        )
    print(
        f"exporting {cfg.model.name} (executorch, XNNPACK, {precision}, input (1, 3, {size[0]}, "
        f"{size[1]}) fixed) to {out} ..."
    )
    metadata = {"config": dataclasses.asdict(cfg), "task": cfg.task, "arch": cfg.model.name}
    if args.int8:
        metadata["calibration_split"] = cfg.data.train_split
    report = export_executorch(
        model,
        out,
        input_size=size,
        metadata=metadata,
        int8=args.int8,
        calibration=calibration,
        num_images=n,
        check_images=check,
        fuse_bn=not args.no_fuse,
        full_size_logits=args.full_size_logits,
        progress=True,
    )
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.2f} MiB, {precision}, XNNPACK)")
    print(f"check: {report.summary()}")
    return 0
