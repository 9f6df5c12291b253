"""Images written whole or not at all: encoded in memory, then through the atomic writer."""

import errno
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from densemnv3.utils.files import WriteError, write_image


def test_written_image_reads_back_the_same(tmp_path):
    ids = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000
    path = write_image(tmp_path / "sub" / "ids.png", ids)
    assert path == tmp_path / "sub" / "ids.png"
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), ids)
    assert [p.name for p in path.parent.iterdir()] == ["ids.png"]


def test_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "pred.png"
    path.write_bytes(b"yesterday's")

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(WriteError) as info:
        write_image(path, np.zeros((4, 4), np.uint8), hint="free some space")
    assert str(info.value) == (
        f"{path}: cannot write, the disk is full (No space left on device); "
        "the previous pred.png is unchanged there and no temp file is left; "
        "free some space"
    )
    monkeypatch.undo()
    assert path.read_bytes() == b"yesterday's"
    assert [p.name for p in tmp_path.iterdir()] == ["pred.png"]


@pytest.mark.parametrize("name", ["pred.unknown", "pred"])
def test_an_array_opencv_cannot_encode_is_one_line_and_no_file(tmp_path, name):
    with pytest.raises(
        WriteError,
        match=f"{name}: OpenCV cannot encode a uint8 array of shape "
        r"\(4, 4\) as ",
    ):
        write_image(tmp_path / name, np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
