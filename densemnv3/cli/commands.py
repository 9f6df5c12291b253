"""The application layer: the ``train*`` and ``eval*`` command lines the tools share.

The top of the import graph: it builds tasks (:mod:`densemnv3.tasks`), the trainer
(:mod:`densemnv3.engine`) and models (:func:`densemnv3.load.load_model`); nothing in the
package imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from densemnv3.cli.arguments import (
    add_runtime_argument,
    add_set_argument,
    load_from_args,
    model_parser,
)
from densemnv3.config import load_config
from densemnv3.errors import ConfigError, UserError
from densemnv3.utils.device import resolve_device
from densemnv3.utils.files import write_image, write_text


def train_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="a config file, e.g. configs/lraspp_synthetic.py")
    add_set_argument(parser)
    parser.add_argument("--work-dir", help="run directory (default: the config's work_dir)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CKPT",
        help="continue a run: from CKPT, or from WORK_DIR/last.pt if no path is given",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


#: The task-specific tools of each task (``tools/train.py`` and ``tools/eval.py`` take any).
TOOL_SUFFIX = {"segmentation": "_seg", "detection": "_det", "multitask": ""}


def _check_task(task_name: str | None, task: str, what: str, tool: str) -> None:
    if task_name is not None and task != task_name:
        own = f"tools/{tool}{TOOL_SUFFIX.get(task, '')}.py"
        also = "" if own == f"tools/{tool}.py" else f" (or tools/{tool}.py, for every task)"
        raise ConfigError(
            f"{what}: this is a {task} {'config' if tool == 'train' else 'model'}; use {own}{also}"
        )


def train_from_cli(task_name: str | None, description: str, argv: list[str] | None = None) -> int:
    """Parse the command line, train, and print where the results are. ``task_name``: the task
    the tool is for, or None for any (``tools/train.py``)."""
    from densemnv3.engine import distributed as dist_utils
    from densemnv3.engine.trainer import Trainer
    from densemnv3.tasks import build_task
    from densemnv3.tasks.common import ensure_synthetic

    args = train_parser(description).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    _check_task(task_name, cfg.task, args.config, "train")
    if args.work_dir:
        cfg.work_dir = args.work_dir
    device = resolve_device(args.device or cfg.train.device)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else Path(cfg.work_dir) / "last.pt"
    dist_utils.init_distributed(device)  # so that rank 0 alone generates a synthetic set
    ensure_synthetic(cfg)
    task = build_task(cfg)
    trainer = Trainer(cfg, task, device=device, resume=resume, progress=not args.no_progress)
    try:
        metrics = trainer.fit()
    finally:
        dist_utils.cleanup()
    if trainer.is_main:
        work = Path(cfg.work_dir)
        others = "".join(
            f", {k} {metrics[k]:.4f}"
            for k in ("mIoU", "AP", "AP50")
            if k != task.metric and isinstance(metrics.get(k), float)
        )
        if trainer.best_metric is None:  # resumed at the end of its schedule, or every value NaN
            print(
                f"\nno {task.metric} to report: no evaluation gave one (iteration "
                f"{trainer.iter} of {trainer.total_iters})"
            )
        else:
            print(
                f"\nfinal {task.metric}: {metrics.get(task.metric, float('nan')):.4f} "
                f"(best {trainer.best_metric:.4f}{others}; fractions 0-1)"
            )
        print(
            f"run directory: {work}  (last.pt, best.pt, results.csv, results.png, metrics.json, "
            f"config.py, tb/)"
        )
    return 0


def eval_parser(description: str) -> argparse.ArgumentParser:
    parser = model_parser(
        description,
        config_help="the config (optional for last.pt / best.pt, which record theirs; "
        "needed for a torchvision file)",
        weights_help="a checkpoint: last.pt / best.pt, a torchvision file, or an exported file "
        "(.onnx of tools/export.py / tools/quantize.py, .pte of tools/export.py)",
    )
    add_set_argument(parser)
    parser.add_argument(
        "--out",
        help="output folder for metrics.json (default: eval/NAME/ beside the "
        "weights file, e.g. work_dirs/run/eval/best_pt/)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    add_runtime_argument(parser)
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=None,
        help="OpenVINO's precision hint for an exported file (default: bf16 where the CPU "
        "has it); other runtimes take the file's",
    )
    return parser


def load_for_eval(args: argparse.Namespace):
    """(cfg, task, model in eval mode on its device, device) for an ``eval_*`` tool: the model
    and config from ``--weights`` (checked against CONFIG when one is given)."""
    import torch

    from densemnv3.tasks import build_task

    loaded = load_from_args(args, runtime=args.runtime, precision=args.precision)
    cfg = loaded.cfg
    if loaded.checkpoint.exported:
        model = loaded.model
        print(
            f"inference: cpu, {model.compute_precision}, {model.describe()}; {model.route}",
            flush=True,
        )
        return cfg, build_task(cfg), model.eval(), torch.device("cpu")
    if args.precision is not None:
        raise UserError(
            f"--precision: {args.weights} is a PyTorch checkpoint, evaluated in fp32; "
            f"--precision chooses an exported file's runtime precision"
        )
    device = torch.device(resolve_device(args.device or cfg.train.device))
    return cfg, build_task(cfg), loaded.model.to(device).eval(), device


def default_output_dir(weights: str | Path) -> Path:
    """``eval/<file name>/`` beside the weights file: each file evaluated gets a folder of its own,
    and a training run's ``metrics.json`` beside its checkpoints is never overwritten."""
    weights = Path(weights)
    return weights.parent / "eval" / weights.name.replace(".", "_")


def output_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else default_output_dir(args.weights)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # an existing file, a read-only place, ...
        raise UserError(
            f"{out}: cannot use as the output folder ({err.strerror}); --out takes "
            "a folder (metrics.json and the other results go in it)"
        ) from None
    return out


def evaluate_and_write(
    args: argparse.Namespace, cfg, task, model, device, dataset, **kwargs
) -> dict:
    """The body of an ``eval_*`` tool: leave bad samples out (``data.skip_bad``, listed in
    ``OUT/skipped_files.txt``) or stop at the first, evaluate, print the report and a summary,
    and write ``OUT/metrics.json`` with ``images_evaluated`` / ``images_skipped``."""
    from densemnv3.data.checks import report_bad_data, sample_counts

    out = output_dir(args)
    (out / "skipped_files.txt").unlink(missing_ok=True)  # a list from an earlier run would mislead
    report_bad_data(
        [dataset], out, skip_bad=cfg.data.skip_bad, log=print, progress=sys.stderr.isatty()
    )
    metrics = task.evaluate(model, dataset, device, **kwargs) | sample_counts(dataset)
    print(task.report(metrics))
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    skipped = metrics["images_skipped"]
    listed = f" (listed in {out / 'skipped_files.txt'})" if skipped else ""
    print(
        f"evaluated {metrics['images_evaluated']} images, skipped {skipped}{listed}; "
        f"{task.metric} {metrics[task.metric]:.4f} (fraction 0-1); wrote {out / 'metrics.json'}"
    )
    return metrics


def eval_from_cli(task_name: str | None, description: str, argv: list[str] | None = None) -> int:
    """The ``eval*`` tools: ``--save-predictions`` (label-id PNGs of models that segment) and
    ``detections.json`` (models that detect) beside ``metrics.json``. ``task_name``: the task
    the tool is for, or None for any (``tools/eval.py``)."""
    parser = eval_parser(description)
    if task_name != "detection":
        parser.add_argument(
            "--save-predictions",
            metavar="DIR",
            help="write label-id PNGs here (models that segment)",
        )
        parser.add_argument("--split", default=None, help="dataset split (default: data.val_split)")
        parser.add_argument(
            "--tta",
            nargs="+",
            metavar="WORD",
            help="test-time augmentation of the segmentation, e.g. --tta "
            "scales=0.5,0.75,1.0,1.25,1.5,1.75 flip (softmax averaged; default: "
            "the config's eval.tta, off); sliding windows: --set eval.mode=slide",
        )
    args = parser.parse_args(argv)
    cfg, task, model, device = load_for_eval(args)
    _check_task(task_name, cfg.task, args.weights, "eval")
    if getattr(args, "tta", None):
        from densemnv3.inference.eval_modes import parse_tta

        if cfg.task == "detection":
            raise ConfigError(
                f"--tta: {args.weights} is a detection model; test-time augmentation "
                "applies to segmentation"
            )
        cfg.eval.tta = parse_tta(args.tta)
    kwargs = {}
    save = getattr(args, "save_predictions", None)
    if save and cfg.task == "detection":
        raise ConfigError(
            f"--save-predictions: {args.weights} is a detection model, with no label map to save"
        )
    dataset = task.dataset(getattr(args, "split", None) or cfg.data.val_split, train=False)
    if cfg.task != "detection":  # a detector's frames are resized to its input anyway
        _note_resized_frames(model, dataset)
    if save:
        kwargs["on_prediction"] = _png_writer(Path(save), dataset)
    if cfg.task != "segmentation":
        kwargs["results_path"] = output_dir(args) / "detections.json"
    metrics = evaluate_and_write(args, cfg, task, model, device, dataset, **kwargs)
    if save:
        print(f"wrote {metrics['images_evaluated']} PNGs to {save}")
    if "results_path" in kwargs:
        print(f"wrote {kwargs['results_path']}")
    return 0


def _note_resized_frames(model, dataset) -> None:
    """Say once when a fixed-size exported file scores frames resized to its size (its metrics
    are then those of the resized images, not of the frames at their own size)."""
    note = getattr(model, "resize_note", None)
    samples = getattr(dataset, "samples", None)
    if note is None or not samples:
        return
    from densemnv3.data.io import read_image

    height, width = read_image(samples[0][0]).shape[:2]
    said = note(height, width)
    if said:
        print(said, flush=True)


def _png_writer(folder: Path, dataset):
    """``on_prediction(index, pred)`` writing each prediction as a PNG of the values the
    dataset's masks hold (Cityscapes: label ids, named as its official evaluation expects); each
    file is whole or absent, and a full disk stops the evaluation with one line."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)

    def on_prediction(index: int, pred: torch.Tensor) -> None:
        ids = dataset.stored_values(pred.to(torch.uint8).cpu().numpy())
        write_image(
            folder / f"{dataset.sample_id(index)}.png",
            ids,
            hint=f"the predictions written before it in {folder} are whole; free some "
            "space and run the evaluation again",
        )

    return on_prediction
