"""What ``predict --source`` names: images and the names their outputs take, and shards."""

import pytest

from densemnv3.errors import UserError
from densemnv3.inference.sources import images_of, parse_shard, shard


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_images_names_and_left_out(tmp_path):
    for name in ("b.png", "a.JPG", "sub/c.png", "notes.txt", ".hidden.png.tmp"):
        _touch(tmp_path / name)
    flat = images_of(str(tmp_path))
    assert flat.names == ["a", "b"] and flat.paths == [
        str(tmp_path / "a.JPG"),
        str(tmp_path / "b.png"),
    ]
    assert dict(flat.left_out) == {".txt": 1}
    deep = images_of(str(tmp_path), recursive=True)
    assert deep.names == ["a", "b", "sub/c"]


def test_names_keep_the_suffix_where_two_would_clash(tmp_path):
    for name in ("x.png", "x.jpg", "y.png"):
        _touch(tmp_path / name)
    assert images_of(str(tmp_path)).names == ["x.jpg", "x.png", "y"]


def test_glob_names_relative_to_its_fixed_folder(tmp_path):
    for name in ("s/one/a.png", "s/two/b.png", "s/two/c.jpg"):
        _touch(tmp_path / name)
    images = images_of(str(tmp_path / "s" / "*" / "*.png"))
    assert images.names == ["one/a", "two/b"]
    with pytest.raises(UserError, match="matches no file"):
        images_of(str(tmp_path / "s" / "*.bmp"))


def test_list_file(tmp_path):
    _touch(tmp_path / "d" / "e" / "a.png")
    _touch(tmp_path / "d" / "f" / "b.png")
    listing = tmp_path / "d" / "list.txt"
    listing.write_text(f"# frames\ne/a.png\n\n{tmp_path / 'd' / 'f' / 'b.png'}\ne/a.png\n")
    images = images_of(str(listing))
    assert images.names == ["e/a", "f/b"]  # relative to their common folder; a repeat once
    assert images.paths[0] == str(tmp_path / "d" / "e" / "a.png")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="names no image"):
        images_of(str(tmp_path / "empty.txt"))


def test_single_image_video_and_errors(tmp_path):
    image = _touch(tmp_path / "one.webp")
    assert images_of(str(image)).names == ["one"]
    assert images_of(str(_touch(tmp_path / "clip.MP4"))).video == str(tmp_path / "clip.MP4")
    with pytest.raises(UserError, match="no such file or folder"):
        images_of(str(tmp_path / "missing"))
    (tmp_path / "none").mkdir()
    _touch(tmp_path / "none" / "deeper" / "a.png")
    with pytest.raises(UserError, match="add --recursive"):
        images_of(str(tmp_path / "none"))


def test_shards_split_with_no_overlap():
    items = list(range(10))
    parts = [shard(items, k, 3) for k in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1/0", "a/b", "3"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)
