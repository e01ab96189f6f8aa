"""Output paths checked before work, and all-or-none writing of a command's outputs."""

import os
import socket

import pytest

from mridpm.data._atomic import all_or_none, atomic_path
from mridpm.data.paths import check_output_dir, check_outputs


def test_new_paths_pass_and_nothing_is_created(tmp_path):
    outs = check_outputs([tmp_path / "a.nii", tmp_path / "sub" / "deeper" / "b.png"], [tmp_path / "in.h5"])
    assert [p.name for p in outs] == ["a.nii", "b.png"]
    assert list(tmp_path.iterdir()) == []  # the writability probe left nothing, no directory was made


@pytest.mark.parametrize("case,message", [
    ("input", "is the input"),
    ("input_link", "is the input"),
    ("directory", "is a directory"),
    ("device", "not a regular file"),
    ("fifo", "not a regular file"),
    ("socket", "not a regular file"),
    ("dangling", "dangling link"),
    ("exists", "exists; pass --overwrite"),
    ("under_file", "is not a directory"),
    ("unwritable", "is not writable"),
    ("twice", "resolve to the same file"),
])
def test_bad_outputs_are_refused(tmp_path, case, message):
    src = tmp_path / "in.nii"
    src.write_bytes(b"input")
    out = tmp_path / "out.nii"
    outs = [out]
    if case == "input":
        out = src
        outs = [out]
    elif case == "input_link":
        out.symlink_to(src)
    elif case == "directory":
        out.mkdir()
    elif case == "device":
        outs = ["/dev/null"]
    elif case == "fifo":
        os.mkfifo(out)
    elif case == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / "s"))
        outs = [tmp_path / "s"]
    elif case == "dangling":
        out.symlink_to(tmp_path / "nowhere" / "x")
    elif case == "exists":
        out.write_bytes(b"old")
    elif case == "under_file":
        outs = [src / "x.nii"]
    elif case == "unwritable":  # /proc refuses new files even to root, unlike a chmod'ed directory
        outs = ["/proc/mridpm-test.nii"]
    elif case == "twice":
        outs = [out, tmp_path / "." / "out.nii"]
    with pytest.raises(ValueError, match=message):
        check_outputs(outs, [src], overwrite=case == "twice")
    assert src.read_bytes() == b"input"


def test_overwrite_allows_an_existing_regular_file_but_never_an_input(tmp_path):
    out = tmp_path / "out.nii"
    out.write_bytes(b"old")
    assert check_outputs([out], overwrite=True) == [out]
    with pytest.raises(ValueError, match="is the input"):
        check_outputs([out], [out], overwrite=True)


def test_output_dir_must_be_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        check_output_dir(tmp_path / "f", ["a.h5"])
    assert check_output_dir(tmp_path / "new", ["a.h5"]) == [tmp_path / "new" / "a.h5"]


def test_all_or_none_writes_together_or_not_at_all(tmp_path):
    keep = tmp_path / "b.txt"
    keep.write_text("previous")
    with pytest.raises(RuntimeError), all_or_none():
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("new a")
        assert not (tmp_path / "a.txt").exists()  # deferred until the block succeeds
        with atomic_path(keep) as tmp:
            tmp.write_text("new b")
        raise RuntimeError("a later step fails")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]  # no temporary file left either
    assert keep.read_text() == "previous"
    with all_or_none():
        for name in ("a.txt", "b.txt"):
            with atomic_path(tmp_path / name) as tmp:
                tmp.write_text(f"new {name}")
    assert [(tmp_path / n).read_text() for n in ("a.txt", "b.txt")] == ["new a.txt", "new b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_interrupt_inside_all_or_none_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), all_or_none():
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("a")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
