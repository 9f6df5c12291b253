"""Run a segmentation, detection or multi-task model on a video file, a camera or a stream.

``densemnv3 demo [CONFIG] --weights CKPT --source SRC [--output out.mp4] [--no-display]``

SRC is a video file, a camera index (``0``) or a stream URL (``rtsp://``, ``http(s)://``). Each
frame gets the segmentation overlay, the detection boxes, or both (a multi-task model: one network
pass per frame) and a smoothed FPS readout; the result
is shown in a window (when a display and OpenCV GUI support are there and ``--no-display`` is not
given) and written to ``--output`` (``.mp4`` or ``.avi``). Precision, memory format, compile and
CUDA graphs default to the device's fastest (CUDA: fp16, NCHW; CPU: fp32, channels_last);
``--precision``, ``--memory-format``, ``--compile`` and ``--cuda-graphs`` override them. An exported
file (``.onnx``, ``.pte``) runs in the fastest runtime installed here, measured, or the one
``--runtime`` names. The resolved choice is printed first (``inference: cuda, fp16, NCHW, compile
off, cuda-graphs off``; ``inference: cpu, int8, openvino ..., precision hint bf16 (...); auto:
fastest here at 720x1280, 2 threads (...; measured now)``). Decoding runs in a background
thread;from a camera or stream the oldest waiting frame is dropped when inference falls behind.

At the end a table gives the frames, the dropped frames, the mean decode / inference / drawing /
writing time per frame and the end-to-end FPS. Ctrl-C or SIGTERM stop the run cleanly: the output
is finalized and the table printed (exit code 130 for Ctrl-C, 0 for SIGTERM). A source with no
frames prints "source has no frames", writes no output and exits 0.
"""

import argparse
import os
import signal
import sys
import time

from densemnv3.cli.arguments import (
    add_inference_arguments,
    add_input_size_argument,
    add_runtime_argument,
    add_set_argument,
    add_threads_argument,
    model_parser,
    predictor_from_args,
)
from densemnv3.inference.stream import Sink, Timings

WINDOW = "densemnv3 demo"
PROGRESS_EVERY_S = 5.0


class Terminated(Exception):
    """SIGTERM was received."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = model_parser(
        __doc__,
        config_help="the model's config, e.g. lraspp_synthetic "
        "(optional for last.pt / best.pt, which record theirs)",
        weights_help="a checkpoint (last.pt / best.pt / torchvision) or an ONNX file "
        "(e.g. best.int8.onnx)",
    )
    parser.add_argument(
        "--source", required=True, help="video file, camera index (0) or stream URL"
    )
    parser.add_argument("--output", help="write the annotated video here (.mp4 or .avi)")
    parser.add_argument("--no-display", action="store_true", help="never open a window")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the stage table here (frames, ms per stage, FPS)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N"
    )
    add_inference_arguments(parser)
    add_runtime_argument(parser)
    add_threads_argument(
        parser,
        help="CPU threads for a frame's work, whichever runtime runs the network "
        "(default: torch's count); 1 is often faster on a busy machine",
    )
    add_input_size_argument(
        parser,
        help="segmentation and multi-task: run the network at HxW (e.g. 360 640 for a "
        "720p source) and scale its label map to the frame; default: the "
        "config's eval size, else the frame's",
    )
    parser.add_argument(
        "--score-threshold", type=float, default=0.3, help="detection: lowest score shown"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="segmentation and multi-task: overlay opacity"
    )
    add_set_argument(parser)
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.input_size is not None and min(args.input_size) < 32:
        parser.error(
            f"--input-size must be at least 32 32, got {' '.join(map(str, args.input_size))}"
        )
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def display_available(no_display: bool) -> tuple[bool, str]:
    """Whether a window can be shown, and if not, why."""
    import cv2

    if no_display:
        return False, "--no-display"
    gui = [
        line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")
    ]
    if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
        return False, "this OpenCV has no GUI support (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False, "no display (DISPLAY is not set)"
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as err:
        return False, f"OpenCV cannot open a window ({str(err).strip().splitlines()[-1]})"
    return True, ""


def _frame_size(capture) -> tuple[int, int] | None:
    """The source's (H, W) as it reports it (None when it does not): the size a network run at
    the frame's size sees, for timing the runtimes."""
    import cv2

    height, width = (
        int(capture.get(p)) for p in (cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FRAME_WIDTH)
    )
    return (height, width) if height > 0 and width > 0 else None


def main(argv=None) -> int:
    import cv2

    from densemnv3.errors import SourceError, UserError
    from densemnv3.inference.video import FrameReader, VideoWriter, source_fps, source_kind

    args = parse_args(argv)
    live = source_kind(args.source) != "file"
    writer = VideoWriter(args.output) if args.output else None  # bad paths fail before torch loads
    reader = FrameReader.open(args.source, max_frames=args.max_frames)
    try:
        import torch

        from densemnv3.data.formats import recorded_classes
        from densemnv3.inference.visualize import draw_detections, draw_fps, overlay_segmentation

        threads = args.threads or torch.get_num_threads()
        predictor = predictor_from_args(
            args,
            threads=threads,  # one budget: torch's pool never spins beside a runtime's
            measure_size=tuple(args.input_size) if args.input_size else _frame_size(reader.capture),
        )
        fixed = getattr(predictor.model, "fixed_size", None)
        if args.input_size is not None and fixed and tuple(args.input_size) != fixed:
            h, w = args.input_size
            raise UserError(
                f"--input-size {h} {w}: {args.weights} takes {fixed[0]}x{fixed[1]} "
                f"inputs only (exported at a fixed size); drop --input-size (frames "
                f"are resized to it), or export at that size (tools/export.py "
                f"--input-size)"
            )
        if args.input_size is not None and predictor.task != "detection":
            predictor.input_size, predictor.label_upsample = tuple(args.input_size), "labels"
            print(
                f"network input {args.input_size[0]}x{args.input_size[1]}, label map scaled to "
                f"the frame",
                flush=True,
            )
        print(f"{predictor.settings.describe()}, {threads} threads", flush=True)
        if writer is not None:
            writer.fps = source_fps(reader.capture)
        display, why = display_available(args.no_display)
        if not display:
            print(f"display off: {why}; running headless", flush=True)
        print(
            f"{predictor.task} on {args.source}: {predictor.device} {predictor.precision}",
            flush=True,
        )

        stop_reason, code, fps, smoothed = None, 0, 0.0, None
        extra = f"{predictor.device.type} {predictor.precision}"
        # The first Ctrl-C / SIGTERM asks the loop to stop after the frame in hand (so the frame
        # count and the file agree); a second one stops at once. Ctrl-C works even when the
        # shell started us with SIGINT ignored.
        stop = _StopRequest()
        previous_handler = _set_handler(signal.SIGTERM, stop)
        previous_int = _set_handler(signal.SIGINT, stop)
        last = last_progress = time.perf_counter()
        timings = Timings(start=last)

        classes = recorded_classes(predictor.cfg.data)
        colours = dict(palette_rgb=classes.colours(), ignore_index=classes.ignore_index)

        def draw(frame, result, fps):
            if predictor.task == "segmentation":
                drawn = overlay_segmentation(frame, result, alpha=args.alpha, **colours)
            elif predictor.task == "detection":
                drawn = draw_detections(frame, result)
            else:  # multitask: the label map under the boxes, from the same pass
                drawn = overlay_segmentation(
                    frame, result["segmentation"], alpha=args.alpha, **colours
                )
                draw_detections(drawn, result["detections"])
            return draw_fps(drawn, fps, extra)

        # Headless, drawing and encoding run in a thread of their own, overlapping the next
        # frame's inference (OpenCV and the runtimes release the GIL); a window needs the main one.
        sink = None if display else Sink(draw, writer, timings)
        try:
            for frame in reader:
                if stop.signum is not None:
                    break
                t0 = time.perf_counter()
                result = predictor(frame)
                t1 = time.perf_counter()
                if timings.frames or (sink and sink.received):  # frame-to-frame, smoothed
                    smoothed = t1 - last if smoothed is None else 0.9 * smoothed + 0.1 * (t1 - last)
                fps = 1.0 / max(smoothed if smoothed is not None else t1 - t0, 1e-6)
                last = t1
                if sink is not None:
                    sink.put(frame, result, fps, t0, t1)
                else:
                    drawn = draw(frame, result, fps)
                    t2 = time.perf_counter()
                    if writer is not None:
                        writer.write(drawn)
                    timings.add(t0, t1, t2, time.perf_counter())
                    cv2.imshow(WINDOW, drawn)
                    key = cv2.waitKey(1) & 0xFF
                    if (
                        key in (27, ord("q"))
                        or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
                    ):
                        stop_reason = "window closed"
                        break
                if t1 - last_progress >= PROGRESS_EVERY_S:
                    last_progress = t1
                    print(f"  {timings.frames} frames, {fps:.1f} FPS", flush=True)
            if sink is not None:
                sink.close()  # every frame drawn and written, in order
            if stop.signum == signal.SIGINT:
                raise KeyboardInterrupt
            if stop.signum == signal.SIGTERM:
                raise Terminated()
        except KeyboardInterrupt:
            stop_reason, code = "interrupted (Ctrl-C)", 130
        except Terminated:
            stop_reason, code = "terminated (SIGTERM)", 0
        finally:
            _set_handler(signal.SIGTERM, signal.SIG_IGN)  # let the output be finalized
            if sink is not None:
                sink.close()
            reader.stop()
            if writer is not None:
                writer.close()
            _set_handler(
                signal.SIGTERM, signal.SIG_DFL if previous_handler is None else previous_handler
            )
            if previous_int is not None:
                _set_handler(signal.SIGINT, previous_int)
            if display:
                cv2.destroyAllWindows()

        frames = timings.frames
        if stop_reason:
            print(f"{stop_reason}: stopped after {frames} frames")
        if frames == 0 and stop_reason is None:
            if live and reader.read_failures:
                raise SourceError(
                    f"no frame could be read from {args.source}"
                    f"{f' ({reader.error})' if reader.error else ''}"
                )
            print("source has no frames; nothing written")
            return 0
        if reader.read_failures:
            print(
                f"the source stopped delivering frames after {reader.frames_read} frames "
                f"(read failed{f': {reader.error}' if reader.error else ''}); ended cleanly"
            )
        print(timings.summary(reader))
        if args.json:
            import json

            from densemnv3.utils.files import write_text

            write_text(
                args.json,
                json.dumps(
                    {
                        "inference": predictor.settings.describe(),
                        "threads": threads,
                        "source": args.source,
                        **timings.stats(reader),
                    },
                    indent=2,
                ),
            )
        if writer is not None and writer.frames_written:
            print(f"wrote {writer.frames_written} frames to {writer.path}")
        return code
    finally:
        reader.stop()
        if writer is not None:
            writer.close()


class _StopRequest:
    """Signal handler: the first signal is recorded for the loop to act on between frames; a
    second raises at once (KeyboardInterrupt for SIGINT, :class:`Terminated` for SIGTERM)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()
        self.signum = signum


def _set_handler(signum, handler):
    """Install a signal handler (main thread only; elsewhere a no-op); the previous one."""
    try:
        return signal.signal(signum, handler)
    except ValueError:
        return None
