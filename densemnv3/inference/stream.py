"""Frames through a stream: a thread that draws and writes them in order behind the inference,
and the per-frame time of each stage (got, inferred, drawn, written)."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np


class Sink:
    """Draws and writes frames in a thread of its own, in the order they were put; ``put`` waits
    while two frames are pending (so memory stays bounded and FPS is the slowest stage's)."""

    def __init__(self, draw, writer, timings: Timings) -> None:
        self.draw, self.writer, self.timings = draw, writer, timings
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.received = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="densemnv3-demo-sink", daemon=True)
        self.thread.start()

    def put(self, frame, result, fps: float, t0: float, t1: float) -> None:
        if self.error is not None:
            raise self.error
        self.received += 1
        self.queue.put((frame, result, fps, t0, t1))

    def close(self) -> None:
        """Wait for the pending frames; raise what drawing or writing raised."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the main thread raises it at its next put
            frame, result, fps, t0, t1 = item
            try:
                start = time.perf_counter()
                drawn = self.draw(frame, result, fps)
                t2 = time.perf_counter()
                if self.writer is not None:
                    self.writer.write(drawn)
                # drawing and writing measured as they ran, after the inference they overlap
                self.timings.add(
                    t0,
                    t1,
                    t1 + (t2 - start),
                    t1 + (time.perf_counter() - start),
                    done=time.perf_counter(),
                )
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err


class Timings:
    """Per-frame stage times; the first frame (warm-up: kernel selection, allocation) is shown
    apart and left out of the means when there are more."""

    def __init__(self, start: float) -> None:
        self.start = start  # before the first frame was read
        self.rows: list[tuple[float, float, float, float]] = []  # got, inferred, drawn, written
        self.done: list[float] = []  # when each frame was finished (written)

    @property
    def frames(self) -> int:
        return len(self.rows)

    def add(
        self,
        got: float,
        inferred: float,
        drawn: float,
        written: float,
        *,
        done: float | None = None,
    ) -> None:
        self.rows.append((got, inferred, drawn, written))
        self.done.append(written if done is None else done)

    def stats(self, reader) -> dict:
        """Frames, drops, the mean ms of each stage per frame and the end-to-end FPS (the first
        frame left out when there are more; ``first_ms`` is its time)."""
        rows = self.rows
        stats = {
            "frames": self.frames,
            "dropped": reader.frames_dropped,
            "read_failures": reader.read_failures,
            "first_ms": 1000 * (rows[0][3] - rows[0][0]) if rows else None,
        }
        if len(rows) > 1:
            span, rows = self.done[-1] - self.done[0], rows[1:]
        else:
            span = self.done[0] - self.start if rows else 0.0
        times = (
            np.array([[b - a, c - b, d - c] for a, b, c, d in rows]) * 1000
            if rows
            else np.zeros((1, 3))
        )
        infer, draw, write = (float(t) for t in times.mean(0))
        return stats | {
            "decode_ms": reader.decode_ms,
            "infer_ms": infer,
            "draw_ms": draw,
            "write_ms": write,
            "end_to_end_ms": 1000 * span / max(len(rows), 1),
            "fps": len(rows) / span if span > 0 else 0.0,
        }

    def summary(self, reader) -> str:
        """The table printed at the end of a run."""
        s = self.stats(reader)
        lines = [
            f"frames: {s['frames']} processed, {s['dropped']} dropped, {s['read_failures']} read "
            f"failures"
        ]
        if s["frames"] > 1:
            lines.append(f"first frame: {s['first_ms']:.0f} ms (warm-up, left out below)")
        table = [("decode", s["decode_ms"], "reader thread, overlaps inference")]
        table += [(name, s[f"{name}_ms"], "") for name in ("infer", "draw", "write")]
        table.append(("end-to-end", s["end_to_end_ms"], f"{s['fps']:.1f} FPS"))
        lines.append(f"{'stage':<12}{'ms/frame':>10}")
        lines += [f"{name:<12}{ms:>10.2f}  {note}".rstrip() for name, ms, note in table]
        return "\n".join(lines)
