"""Video in and out with OpenCV: open a file / camera / stream, read it in a background thread,
write an ``.mp4`` / ``.avi``.

:class:`FrameReader` decodes while the caller runs inference. Files are read completely: the
reader waits when its queue is full. Live sources (cameras, streams) keep producing frames
whether or not they are consumed, so the reader drops the oldest queued frame instead and counts
it: the caller always gets the freshest frames.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from densemnv3.errors import SourceError, UserError

__all__ = ["FrameReader", "VideoWriter", "open_source", "source_fps", "source_kind"]

#: Open and read timeouts of network streams: a dead stream ends the run instead of hanging it.
STREAM_TIMEOUT_S = 10.0
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_CREDENTIALS = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/:@]+):[^/@]*@")
_NATIVE_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+(global \S+ )?")
_END = object()


class Capture(Protocol):
    """What :class:`FrameReader` needs of a ``cv2.VideoCapture``."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


def source_kind(src: str) -> str:
    """``"camera"`` (an index such as ``"0"``, or ``/dev/videoN``), ``"stream"`` (a URL:
    ``rtsp://``, ``http(s)://``, ...) or ``"file"`` (a path or an image-sequence pattern)."""
    src = str(src)
    if src.strip().isdigit() or src.startswith("/dev/video"):
        return "camera"
    if _URL.match(src):
        return "stream"
    return "file"


def open_source(src: str) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` for ``src`` (see :func:`source_kind`).

    :class:`SourceError` with one line saying why when it cannot be opened; what OpenCV and
    FFmpeg print meanwhile is folded into that line instead of going to stderr.
    """
    src = str(src)
    kind = source_kind(src)
    if kind == "file" and "%" not in src:  # "%05d.png" patterns name no single file
        path = Path(src)
        if not path.exists():
            raise SourceError(f"cannot open video source {src!r}: no such file")
        if path.is_dir():
            raise SourceError(f"cannot open video source {src!r}: it is a directory, not a video")
        if path.stat().st_size == 0:
            raise SourceError(f"cannot open video source {src!r}: the file is empty")
    with _native_stderr() as native:
        if kind == "camera":
            index = int(src[len("/dev/video") :]) if src.startswith("/dev/video") else int(src)
            capture = cv2.VideoCapture(index)
        elif kind == "stream":
            ms = int(STREAM_TIMEOUT_S * 1000)
            capture = cv2.VideoCapture(
                src,
                cv2.CAP_ANY,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
            )
        else:
            capture = cv2.VideoCapture(src)
        opened = capture.isOpened()
    if opened:
        if native:
            print("\n".join(native), file=sys.stderr)
        return capture
    capture.release()
    reason = _reason(native)
    if kind == "camera":
        device = src if src.startswith("/dev/") else f"/dev/video{int(src)}"
        missing = sys.platform.startswith("linux") and not os.path.exists(device)
        detail = f": no {device} device" if missing else f" ({reason})" if reason else ""
        raise SourceError(f"cannot open camera {src.removeprefix('/dev/video')}{detail}")
    if kind == "stream":
        raise SourceError(
            f"cannot open stream {_redact(src)}: check the URL and that the stream "
            f"is live{f' ({reason})' if reason else ''}"
        )
    raise SourceError(
        f"cannot open video source {src!r}: OpenCV cannot decode it ("
        f"{reason + '; ' if reason else ''}not a video, truncated, without a video "
        "track, or in a codec this FFmpeg lacks)"
    )


def source_fps(capture: Any, default: float = 25.0) -> float:
    """The source's frame rate, or ``default`` when it reports none (cameras, streams)."""
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    except (AttributeError, cv2.error, TypeError):
        return default
    return fps if 0 < fps <= 1000 else default


def _redact(url: str) -> str:
    return _CREDENTIALS.sub(r"\1:***@", url)


def _reason(lines: list[str]) -> str:
    """The most telling line OpenCV / FFmpeg printed: the last one, prefixes stripped."""
    cleaned = [_NATIVE_PREFIX.sub("", line).strip() for line in lines]
    cleaned = [line for line in cleaned if line]
    return _redact(cleaned[-1]) if cleaned else ""


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 meanwhile (FFmpeg's av_log)."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: let it be
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


# ---------------------------------------------------------------------- reading


class FrameReader:
    """Read frames from ``capture`` in a background thread into a queue of ``queue_size``
    (default 4 for files; 2 for live sources, whose queued frames only add latency).

    Iterate over it for the frames (BGR uint8, as ``capture.read()`` returns them); iteration
    ends at the end of the source, after ``max_frames``, after :meth:`stop`, or when a read fails.
    ``live=True`` (cameras, streams): a full queue drops its oldest frame (``frames_dropped``);
    a failed read is a dropped stream (``read_failures``). ``live=False`` (files): nothing is
    dropped and a failed read is the end of the file.

    Statistics: ``frames_read``, ``frames_dropped``, ``read_failures``, ``error`` (text of an
    exception raised by ``read``), ``decode_ms`` (mean time of ``read``, in the reader thread).
    The capture is released when the reader stops (use it as a context manager).
    """

    def __init__(
        self,
        capture: Capture,
        *,
        live: bool,
        queue_size: int | None = None,
        max_frames: int | None = None,
    ) -> None:
        if queue_size is None:
            queue_size = 2 if live else 4
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.capture = capture
        self.live = live
        self.queue_size = queue_size
        self.max_frames = max_frames
        self.frames_read = 0
        self.frames_dropped = 0
        self.read_failures = 0
        self.error: str | None = None
        self.decode_seconds = 0.0
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="FrameReader", daemon=True)
        self._started = False

    @classmethod
    def open(cls, src: str, **kwargs: Any) -> FrameReader:
        """A reader of :func:`open_source` ``(src)``, live unless ``src`` is a file."""
        return cls(open_source(src), live=source_kind(src) != "file", **kwargs)

    @property
    def decode_ms(self) -> float:
        return 1000.0 * self.decode_seconds / self.frames_read if self.frames_read else 0.0

    @property
    def finished(self) -> bool:
        """True once the reader thread has put its last frame in the queue."""
        return self._started and not self._thread.is_alive()

    def start(self) -> FrameReader:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start()
        while True:
            item = self._get()
            if item is _END:
                return
            yield item

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, wait for the thread, release the capture (idempotent)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._started:
            self._thread.join(timeout)
        if not self._thread.is_alive():  # a read blocked past the timeout keeps its capture
            with contextlib.suppress(Exception):
                self.capture.release()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the source is exhausted (the frames stay queued)."""
        self._thread.join(timeout)

    def __enter__(self) -> FrameReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ threads
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.frames_read >= self.max_frames:
                    break
                start = time.perf_counter()
                try:
                    ok, frame = self.capture.read()
                except Exception as err:  # e.g. cv2.error from a broken stream
                    ok, frame = False, None
                    self.error = f"{type(err).__name__}: {err}"
                elapsed = time.perf_counter() - start
                if not ok or frame is None:
                    if self.live or self.error:
                        self.read_failures += 1
                    break
                self.decode_seconds += elapsed
                self.frames_read += 1
                self._put(frame)
        finally:
            with self._cond:
                self._queue.append(_END)
                self._cond.notify_all()

    def _put(self, frame: np.ndarray) -> None:
        with self._cond:
            if self.live:
                if len(self._queue) >= self.queue_size:
                    self._queue.popleft()
                    self.frames_dropped += 1
            else:
                while len(self._queue) >= self.queue_size and not self._stop.is_set():
                    self._cond.wait(0.1)
            self._queue.append(frame)
            self._cond.notify_all()

    def _get(self) -> Any:
        with self._cond:
            while not self._queue:
                if self._stop.is_set():
                    return _END
                self._cond.wait(0.1)
            if self._stop.is_set():
                return _END
            item = self._queue.popleft()
            self._cond.notify_all()
            return item


# ---------------------------------------------------------------------- writing


class VideoWriter:
    """A ``cv2.VideoWriter`` opened on the first frame (its size sets the video's), ``mp4v`` for
    ``.mp4``/``.m4v``/``.mov``, ``MJPG`` for ``.avi``. A frame of another size is resized.

    Use it as a context manager (or call :meth:`close`): the file is only playable once released.
    A run that writes no frame leaves no file.
    """

    FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str | os.PathLike, fps: float = 25.0) -> None:
        self.path = Path(path)
        self.fourcc = self.FOURCC.get(self.path.suffix.lower())
        if self.fourcc is None:
            raise UserError(
                f"cannot write video {str(self.path)!r}: unsupported extension "
                f"{self.path.suffix!r}; use one of {', '.join(self.FOURCC)}"
            )
        if not fps > 0:
            raise UserError(f"video fps must be positive, got {fps!r}")
        self.fps = float(fps)
        self.size: tuple[int, int] | None = None  # (width, height)
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self._writer is None:
            self._open(frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(frame))
        self.frames_written += 1

    def _open(self, width: int, height: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot write video {str(self.path)!r}: {err.strerror}") from None
        with _native_stderr() as native:
            writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height)
            )
            opened = writer.isOpened()
        if not opened:
            writer.release()
            reason = _reason(native)
            raise UserError(
                f"cannot write video {str(self.path)!r}: OpenCV cannot open a {self.fourcc} "
                f"writer{f' ({reason})' if reason else ''}; check that the folder is writable, "
                "or use an .avi (MJPG) output"
            )
        self._writer, self.size = writer, (width, height)

    def close(self) -> None:
        """Release the writer, finalizing the file (idempotent)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
