"""Export a checkpoint to ONNX or TorchScript and check the file against PyTorch.

``densemnv3 export [CONFIG] --weights CKPT --format onnx|torchscript --out FILE
[--set KEY=VALUE ...] [--input-size H W] [--opset N] [--postprocess]``

CONFIG may be left out for ``last.pt`` / ``best.pt``, which record the config they were trained
with; a torchvision file needs it.

Input ``images`` (N, 3, H, W), normalised as in training. In an ONNX file N, H and W are all
dynamic (one file for every frame size; LR-ASPP with ``pool='paper'``, whose window depends on
the size, is exported at the input size); a TorchScript file is traced at the input size.
Segmentation outputs ``logits`` (N, C, H, W). Detection outputs ``boxes`` (N, A, 4) xyxy pixels
and ``scores`` (N, A, C) softmax, without NMS (see ``densemnv3.inference.export.SSDLiteExport``),
or with ``--postprocess`` (ONNX) the detections: ``num_detections`` (N,), ``boxes`` (N, D, 4),
``scores`` (N, D), ``labels`` (N, D) after the score threshold, per-class top-k and NMS
(ONNX ``NonMaxSuppression``) of the model's settings. The multi-task model outputs
``logits``, ``boxes`` and ``scores`` as above, from one graph and one backbone pass.

The file is run (onnxruntime / ``torch.jit.load``) on random input at batch 1 and 3 (and, when
dynamic, at a second size) and compared with PyTorch: above 1e-3 max abs difference, or with
``--postprocess`` any detection not matched (same label, box within 1e-2 px, score within 1e-4),
the tool exits with code 1. An ONNX file records the config, so the eval tools, the Predictor
and the demo run it with ``--weights FILE``. The file is fp32 NCHW whatever the device (the first
line printed says so): reduced precision is chosen in the runtime that runs it (TensorRT
``--fp16``, ...), or int8 by ``tools/quantize.py``.
"""

import argparse
from pathlib import Path

from densemnv3.utils.cli import add_set_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="the config (optional for last.pt / best.pt)")
    parser.add_argument("--weights", required=True, help="a checkpoint (last.pt / best.pt / torchvision)")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--out", required=True,
                        help="file to write, e.g. lraspp.onnx; a name without a suffix gets the format's "
                             "(.onnx, or .pt for torchscript), another format's suffix is an error")
    add_set_argument(parser)
    parser.add_argument(
        "--input-size", nargs=2, type=int, metavar=("H", "W"),
        help="input size (default: data.image_size for detection, data.eval_resize or data.crop_size "
             "for segmentation and multi-task)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (no folding)")
    parser.add_argument("--postprocess", action="store_true",
                        help="detection, ONNX: decode, score threshold, per-class NMS and top-k in the graph")
    args = parser.parse_args(argv)

    import dataclasses

    from densemnv3.config import load_config
    from densemnv3.inference.export import export_model, min_input_size, output_file, require_onnx
    from densemnv3.inference.settings import export_settings
    from densemnv3.models import load_model

    out = output_file(args.out, args.format)
    if out != Path(args.out):
        print(f"writing {out} (--out {args.out} does not end in {out.suffix})")
    if args.format == "onnx":
        require_onnx()
    loaded = load_model(load_config(args.config, args.overrides) if args.config else None,
                        args.weights, overrides=args.overrides, pytorch="export")
    cfg, model = loaded.cfg, loaded.model
    if args.input_size:
        size = tuple(args.input_size)
    elif cfg.task == "detection":
        from densemnv3.data.transforms import detector_input_size

        size = detector_input_size(cfg.data.image_size)
    else:
        size = tuple(cfg.data.eval_resize or cfg.data.crop_size)
        low = min_input_size(model, (10**4, 10**4))
        if not cfg.data.eval_resize and any(s < m for s, m in zip(size, low)):
            # evaluated on full frames: trace at a multiple of the crop in the dynamic range
            factor = max(-(-m // s) for s, m in zip(size, low))
            size = (size[0] * factor, size[1] * factor)

    print(f"{export_settings().describe()} (the file runs on any device; choose fp16 in its runtime)")
    low = min_input_size(model, size) if args.format == "onnx" else None
    dynamic = low is not None
    shape = f"(N, 3, {size[0]}, {size[1]})" + (", H and W dynamic" if dynamic else "")
    if dynamic and low != (32, 32):
        shape += f" from {low[0]}x{low[1]} up"
    print(f"exporting {cfg.model.name} ({args.format}, input {shape}) to {out} ...")
    if args.format == "onnx" and not dynamic:
        print(f"note: pool='paper' averages a window clamped to maps smaller than it, so a file traced "
              f"at {size[0]}x{size[1]} takes that size only (from 784x784 up its window is fixed and "
              f"the file takes any size; pool='global' takes any size)")
    if not dynamic and cfg.task == "segmentation":
        cfg.data.eval_resize = size  # the file takes this size only: the tools resize frames to it
    metadata = {"config": dataclasses.asdict(cfg), "task": cfg.task, "arch": cfg.model.name}
    report = export_model(
        model, out, fmt=args.format, input_size=size, opset=args.opset,
        fuse_bn=not args.no_fuse, postprocess=args.postprocess, metadata=metadata,
    )
    opset = f", opset {report.opset}" if report.opset else ""
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.2f} MiB{opset})")
    print(f"check: {report.summary()}")
    return 0

