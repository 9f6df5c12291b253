#!/usr/bin/env python
"""Export a checkpoint to ONNX or TorchScript and check the file against PyTorch.

``python tools/export.py [CONFIG] --weights CKPT --format onnx|torchscript --out FILE
[--set KEY=VALUE ...] [--input-size H W] [--opset N]``

CONFIG may be left out for ``last.pt`` / ``best.pt``, which record the config they were trained
with; a torchvision file needs it.

Input ``images`` (N, 3, H, W), normalised as in training, N dynamic. Segmentation outputs
``logits`` (N, C, H, W); detection outputs ``boxes`` (N, A, 4) xyxy pixels and ``scores``
(N, A, C) softmax, without NMS (run ``torchvision.ops.batched_nms`` on them; see
``densemnv3.inference.export.SSDLiteExport``); the multi-task model outputs all three, from one
graph and one backbone pass. The file is run on random input at batch 1 and 3
(onnxruntime / ``torch.jit.load``) and compared with PyTorch; above 1e-3 max abs difference the
tool exits with code 1. The file is fp32 NCHW whatever the device (the first line printed says
so): reduced precision is chosen in the runtime that runs it (TensorRT ``--fp16``, ...).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.utils.cli import add_set_argument, run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="the config (optional for last.pt / best.pt)")
    parser.add_argument("--weights", required=True, help="a checkpoint (last.pt / best.pt / torchvision)")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--out", required=True, help="file to write, e.g. lraspp.onnx")
    add_set_argument(parser)
    parser.add_argument(
        "--input-size", nargs=2, type=int, metavar=("H", "W"),
        help="input size (default: data.image_size for detection, data.eval_resize or data.crop_size "
             "for segmentation and multi-task)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (no folding)")
    args = parser.parse_args(argv)

    from densemnv3.config import load_config
    from densemnv3.inference.export import check_output_path, export_model, require_onnx
    from densemnv3.inference.settings import export_settings
    from densemnv3.models import load_model

    check_output_path(args.out)
    if args.format == "onnx":
        require_onnx()
    loaded = load_model(load_config(args.config, args.overrides) if args.config else None,
                        args.weights, overrides=args.overrides)
    cfg, model = loaded.cfg, loaded.model
    if args.input_size:
        size = tuple(args.input_size)
    elif cfg.task == "detection":
        from densemnv3.data.transforms import detector_input_size

        size = detector_input_size(cfg.data.image_size)
    else:
        size = tuple(cfg.data.eval_resize or cfg.data.crop_size)

    print(f"{export_settings().describe()} (the file runs on any device; choose fp16 in its runtime)")
    print(f"exporting {cfg.model.name} ({args.format}, input (N, 3, {size[0]}, {size[1]})) to {args.out} ...")
    report = export_model(
        model, args.out, fmt=args.format, input_size=size, opset=args.opset,
        fuse_bn=not args.no_fuse,
    )
    opset = f", opset {report.opset}" if report.opset else ""
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.2f} MiB{opset})")
    print(f"check: {report.summary()}")
    return 0


if __name__ == "__main__":
    run_main(main)
