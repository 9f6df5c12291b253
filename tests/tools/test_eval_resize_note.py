"""An evaluation of a fixed-size exported file on frames of another size says so once, with the
size it resizes to; a file that takes the frames as they are says nothing."""

from types import SimpleNamespace

from densemnv3.cli.commands import _note_resized_frames
from densemnv3.runtimes.model import ExportedModel


class FixedSize:
    """The part of :class:`ExportedModel` the note needs: its path and fixed size."""

    resize_note = ExportedModel.resize_note

    def __init__(self, path: str, size: tuple[int, int]) -> None:
        self.path, self.fixed_size = path, size


def test_the_note_names_both_sizes_once(tiny_synthetic, capsys):
    image = next((tiny_synthetic / "leftImg8bit" / "val").rglob("*.png"))  # 64x128 frames
    dataset = SimpleNamespace(samples=[(str(image), "")])
    _note_resized_frames(FixedSize("small.pte", (32, 64)), dataset)
    out = capsys.readouterr().out
    assert out.count("note: small.pte takes 32x64 inputs only") == 1
    assert "the 64x128 frames are resized to it" in out and "--input-size 64 128" in out
    _note_resized_frames(FixedSize("exact.pte", (64, 128)), dataset)
    assert capsys.readouterr().out == ""
