"""Quantize a checkpoint to int8 (post-training, static) as an ONNX QDQ file.

``densemnv3 quantize [CONFIG] --weights CKPT [--runtime onnxruntime|openvino] [--calib-images N]
[--out FILE] [--set KEY=VALUE ...]``

``--runtime`` shapes the graph for the runtime that will run it (any ONNX runtime runs either
file, at its own speed): ``onnxruntime`` (default) rewrites hard-swish and the squeeze-excitation
pool into operators onnxruntime has int8 kernels for; ``openvino`` keeps the graph as exported and
leaves no quantize/dequantize pair between a convolution and its activation, so OpenVINO's CPU
plugin fuses them into one int8 kernel (on a 2-core AVX2 CPU: 0.52-0.60x its fp32 time, against
0.75-0.89x for the onnxruntime-shaped file; ``BENCHMARKS.md``, where int8's time goes).
``--runtime auto`` in the tools that run the file then measures which installed engine is fastest
for it.

CONFIG may be left out for ``last.pt`` / ``best.pt``, which record the config they were trained
with. Weights are quantized per output channel, activations per tensor from their range on N
training images (default 32) through the eval transform — a seeded choice of images, so the same
N gives the same file. The file records the config: ``eval_seg.py`` / ``eval_det.py``, the
Predictor and ``demo_video.py`` run it with ``--weights FILE`` (``benchmark.py --variants int8``
times this route). It takes any input size (LR-ASPP with ``pool='paper'``: from 784x784 up, or
only the size it was calibrated at when that is smaller). SSDLite's postprocess (decode,
threshold, NMS) and LR-ASPP's classifiers and final upsampling stay in float. A multi-task
model's file holds the raw tensors of its pass (the logits at stride 8, SSDLite's class logits,
box deltas and default boxes), which the tools upsample and post-process as the PyTorch model.

The file is compared with the fp32 model on 4 validation images; below 0.9 pixel agreement or
above 0.35 relative RMS error the tool exits with code 1 (the file is kept, for inspection).
Default output: ``CKPT`` with the suffix ``.int8.onnx`` (``best.pt`` -> ``best.int8.onnx``;
``--runtime openvino``: ``best.int8.openvino.onnx``); an
``--out`` name without ``.onnx`` gets it (``model_int8`` -> ``model_int8.onnx``).
"""

from pathlib import Path

from densemnv3.cli.arguments import (
    CHECKPOINT_HELP,
    add_set_argument,
    load_from_args,
    model_parser,
)

CHECK_IMAGES = 4
FORMS = ("onnxruntime", "openvino")  # densemnv3.export.int8_graph.FORMS, without importing torch


def main(argv: list[str] | None = None) -> int:
    parser = model_parser(__doc__, weights_help=CHECKPOINT_HELP)
    parser.add_argument(
        "--calib-images",
        type=int,
        default=32,
        metavar="N",
        help="training images to calibrate the activation ranges on (default 32)",
    )
    parser.add_argument(
        "--out",
        help="file to write (default: CKPT with the suffix .int8.onnx, --runtime openvino: "
        ".int8.openvino.onnx); a name "
        "without .onnx gets it (model_int8 -> model_int8.onnx), one ending "
        "in another model format's suffix (.pt) is an error",
    )
    parser.add_argument(
        "--runtime",
        choices=FORMS,
        default="onnxruntime",
        help="the runtime the file's graph is shaped for (default onnxruntime); any ONNX "
        "runtime runs either, at its own speed (BENCHMARKS.md, where int8's time goes)",
    )
    add_set_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import dataclasses

    from densemnv3.errors import UserError

    if args.calib_images < 1:
        raise UserError(f"--calib-images must be at least 1, got {args.calib_images}")

    from densemnv3.export.onnx_export import require_onnx
    from densemnv3.export.paths import output_file
    from densemnv3.export.quantize import quantize_model
    from densemnv3.export.sizes import min_input_size

    suffix = ".int8.onnx" if args.runtime == "onnxruntime" else f".int8.{args.runtime}.onnx"
    out = output_file(args.out or Path(args.weights).with_suffix(suffix), "onnx")
    if args.out and out != Path(args.out):
        print(f"writing {out} (--out {args.out} does not end in {out.suffix})")
    require_onnx("int8 quantization")
    loaded = load_from_args(args, pytorch="quantization")
    cfg, model = loaded.cfg, loaded.model
    task, train, order = calibration_set(cfg, args.calib_images)
    n = len(order)
    size = tuple(train[order[0]][0].shape[-2:])
    if min_input_size(model, size) is None and cfg.task != "detection":
        cfg.data.eval_resize = size  # a fixed-size file: the tools resize frames to it
    check = check_images(task, cfg)

    print(
        f"quantizing {cfg.model.name} to int8 (QDQ for {args.runtime}, per-channel weights), "
        "calibrating "
        f"on {n} images of split {cfg.data.train_split!r} at {size[0]}x{size[1]} ..."
    )
    metadata = {
        "config": dataclasses.asdict(cfg),
        "task": cfg.task,
        "arch": cfg.model.name,
        "calibration_split": cfg.data.train_split,
    }
    report = quantize_model(
        model,
        out,
        calibration=(train[i][0] for i in order),
        num_images=n,
        input_size=size,
        check_images=check,
        metadata=metadata,
        progress=not args.no_progress,
        runtime=args.runtime,
    )
    low = report.min_size
    shape = (
        f"{size[0]}x{size[1]} only (pool='paper', below its fixed window)"
        if low is None
        else "any H and W"
        if low == (32, 32)
        else f"any H >= {low[0]} and W >= {low[1]}"
    )
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.2f} MiB; input (N, 3, H, W), {shape})")
    print(f"check on {len(check)} images of split {cfg.data.val_split!r}: {report.summary()}")
    return 0


def calibration_set(cfg, count: int):
    """(task, the training split through the eval transform, its calibration images' indices):
    ``count`` of them, or all where the split has fewer, in the seeded order of
    :func:`~densemnv3.export.quantize.calibration_order`. A synthetic set the config asks for is
    made first."""
    from densemnv3.errors import UserError
    from densemnv3.export.quantize import calibration_order
    from densemnv3.tasks import build_task
    from densemnv3.tasks.common import ensure_synthetic

    ensure_synthetic(cfg)
    task = build_task(cfg)
    train = task.dataset(cfg.data.train_split, train=False)  # training images, eval transform
    n = min(count, len(train))
    if n == 0:
        raise UserError(
            f"{cfg.data.root}: split {cfg.data.train_split!r} has no images to calibrate on"
        )
    return task, train, calibration_order(len(train), n)


def check_images(task, cfg) -> list:
    """The first :data:`CHECK_IMAGES` validation images, each a batch of one: the int8 file is
    compared with PyTorch on them."""
    val = task.dataset(cfg.data.val_split, train=False)
    return [val[i][0][None] for i in range(min(CHECK_IMAGES, len(val)))]
