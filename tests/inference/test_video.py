import threading
import time

import cv2
import numpy as np
import pytest

from densemnv3.errors import SourceError, UserError
from densemnv3.inference import FrameReader, VideoWriter, open_source, source_fps, source_kind


class FakeCapture:
    """``frames`` numbered frames (pixel value = index), then ``read()`` -> ``(False, None)``, or
    ``exc`` raised. ``delay`` seconds per read."""

    def __init__(self, frames: int, *, delay: float = 0.0, exc: Exception | None = None):
        self.frames, self.delay, self.exc = frames, delay, exc
        self.index = 0
        self.released = False
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.delay:
            time.sleep(self.delay)
        if self.index >= self.frames:
            if self.exc is not None:
                raise self.exc
            return False, None
        frame = np.full((4, 6, 3), self.index % 256, np.uint8)
        self.index += 1
        return True, frame

    def release(self):
        self.released = True


def indices(frames):
    return [int(f[0, 0, 0]) for f in frames]


def wait_for(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


# ---------------------------------------------------------------------- sources


def test_source_kind():
    assert source_kind("0") == source_kind("/dev/video2") == "camera"
    assert source_kind("rtsp://cam.local/live") == source_kind("https://x.org/a.m3u8") == "stream"
    assert source_kind("clips/a.mp4") == source_kind("frames/%05d.png") == "file"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: "missing.mp4", "cannot open video source 'missing.mp4': no such file"),
        (lambda tmp: str(tmp), "it is a directory"),
        (lambda tmp: str((tmp / "empty.mp4").touch() or tmp / "empty.mp4"), "the file is empty"),
        (
            lambda tmp: str((tmp / "a.mp4").write_text("not a video") and tmp / "a.mp4"),
            "OpenCV cannot decode it",
        ),
        (lambda tmp: "97", "cannot open camera 97"),
        (
            lambda tmp: "rtsp://user:secret@127.0.0.1:1/live",
            "cannot open stream rtsp://user:***@127.0.0.1:1/live: check the URL and that the "
            "stream is live",
        ),
    ],
    ids=["missing", "directory", "empty", "not-a-video", "camera", "stream"],
)
def test_open_source_errors_are_one_readable_line(tmp_path, capfd, make, message):
    src = make(tmp_path)
    with pytest.raises(SourceError) as err:
        open_source(src)
    text = str(err.value)
    assert message in text and "\n" not in text and "secret" not in text
    assert capfd.readouterr().err == ""  # OpenCV / FFmpeg chatter is folded into the message


def test_open_source_reads_a_video(tmp_path):
    path = tmp_path / "clip.avi"
    with VideoWriter(path, fps=12.0) as writer:
        for i in range(3):
            writer.write(np.full((16, 24, 3), 40 * i, np.uint8))
    capture = open_source(str(path))
    assert source_fps(capture) == pytest.approx(12.0)
    with FrameReader(capture, live=False) as reader:
        frames = list(reader)
    assert [f.shape for f in frames] == [(16, 24, 3)] * 3
    assert source_fps(object(), default=30.0) == 30.0


# ---------------------------------------------------------------------- reading


def test_file_reader_blocks_and_never_drops():
    capture = FakeCapture(20)
    reader = FrameReader(capture, live=False, queue_size=3).start()
    wait_for(lambda: capture.reads >= 4)
    time.sleep(0.05)
    assert reader.frames_read <= 4 and not reader.finished  # waiting for room in the queue
    frames = []
    for frame in reader:
        frames.append(frame)
        time.sleep(0.002)  # a consumer slower than decoding
    assert indices(frames) == list(range(20))
    assert (reader.frames_read, reader.frames_dropped, reader.read_failures) == (20, 0, 0)
    reader.stop()
    assert capture.released


def test_live_reader_drops_the_oldest_frames():
    capture = FakeCapture(20)
    reader = FrameReader(capture, live=True, queue_size=3).start()
    reader.join(5)  # a consumer that fell behind: the source produced everything meanwhile
    assert indices(reader) == [17, 18, 19]
    assert (reader.frames_read, reader.frames_dropped) == (20, 17)
    assert reader.read_failures == 1  # a live source ending is a failed read
    reader.stop()


def test_stream_that_drops_mid_run_ends_cleanly():
    capture = FakeCapture(5, delay=0.002)
    with FrameReader(capture, live=True, queue_size=8) as reader:
        frames = list(reader)
    assert indices(frames) == [0, 1, 2, 3, 4]
    assert (reader.frames_read, reader.frames_dropped, reader.read_failures) == (5, 0, 1)
    assert reader.error is None and capture.released

    broken = FakeCapture(3, exc=cv2.error("stream broke"))
    with FrameReader(broken, live=True, queue_size=8) as reader:
        assert indices(reader) == [0, 1, 2]
    assert reader.read_failures == 1 and "stream broke" in reader.error


def test_max_frames_and_decode_time():
    capture = FakeCapture(100, delay=0.005)
    with FrameReader(capture, live=False, max_frames=5) as reader:
        assert len(list(reader)) == 5
    assert capture.reads == 5 and reader.frames_read == 5
    assert reader.decode_ms >= 4.0


def test_stop_releases_a_blocked_reader():
    capture = FakeCapture(1000)
    reader = FrameReader(capture, live=False, queue_size=2).start()
    wait_for(lambda: capture.reads >= 3)
    reader.stop()
    assert reader.finished and capture.released
    assert list(reader) == []
    assert threading.active_count() < 50


# ---------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_writer_opens_lazily_and_finalizes(tmp_path, suffix):
    path = tmp_path / "sub" / f"out{suffix}"
    with VideoWriter(path, fps=10.0) as writer:
        assert not path.exists()
        for i in range(3):
            writer.write(np.full((32, 48, 3), 60 * i, np.uint8))
        writer.write(np.zeros((10, 10, 3), np.uint8))  # another size is resized
    assert writer.frames_written == 4 and writer.size == (48, 32)
    capture = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (32, 48, 3)
        count += 1
    capture.release()
    assert count == 4


def test_writer_errors(tmp_path):
    with pytest.raises(UserError, match=r"unsupported extension '\.gif'"):
        VideoWriter(tmp_path / "out.gif")
    with VideoWriter(tmp_path / "none.mp4"):
        pass
    assert not (tmp_path / "none.mp4").exists()  # no frame, no file
    (tmp_path / "file").write_text("")
    writer = VideoWriter(tmp_path / "file" / "out.mp4")
    with pytest.raises(UserError, match="cannot write video .*file/out.mp4"):
        writer.write(np.zeros((8, 8, 3), np.uint8))
