"""deepclust._io: atomic writes that refuse non-regular targets, umask permissions, the run-folder lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deepclust import _io
from deepclust._io import (
    OutputPathError,
    RunInUseError,
    RunLock,
    atomic_open,
    check_output_folder,
    check_writable_output,
    read_lock_holder,
    write_text,
)
from deepclust.runs import create_run_dir

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_posix = pytest.mark.skipif(os.name != "posix", reason="FIFOs, devices and umask are POSIX")


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process umask for the test and restores it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


# --------------------------------------------------------------------------- regular files

def test_atomic_open_replaces_a_regular_file_and_leaves_no_part_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyError), atomic_open(target) as f:
        f.write("half")
        raise KeyError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_missing_parent_folders_are_made(tmp_path):
    write_text(tmp_path / "x" / "y" / "a.txt", "hi")
    assert (tmp_path / "x" / "y" / "a.txt").read_text() == "hi"


@needs_posix
@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                       (0o077, 0o600, 0o700)])
def test_files_and_folders_get_their_mode_from_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_text(tmp_path / "new" / "a.txt", "x")  # mkstemp alone would give 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "a.txt").st_mode) == file_mode
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == dir_mode
    old = tmp_path / "old.txt"
    old.write_text("x")
    os.chmod(old, 0o640)
    write_text(old, "y")  # a replaced file gets the umask's mode too, as after rm + write
    assert stat.S_IMODE(os.stat(old).st_mode) == file_mode


@needs_posix
def test_run_folders_follow_the_umask(tmp_path, umask):
    umask(0o022)
    paths = create_run_dir(tmp_path / "runs", "kmeans")
    assert stat.S_IMODE(os.stat(tmp_path / "runs").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(paths.root).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(paths.status).st_mode) == 0o644


def test_the_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert _io._read_umask() == 0o027
    assert _io._file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # still what the test set


# ---------------------------------------------------------------- targets that are not regular files

def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _device(path: Path) -> Path:
    """A character device like /dev/null, made in the test's own folder (root only)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot create a device node here ({exc}); needs root")
    return path


def _link_to_file(path: Path) -> Path:
    target = path.parent / "real.txt"
    target.write_text("keep me")
    path.symlink_to(target)
    return path


def _dangling_link(path: Path) -> Path:
    path.symlink_to(path.parent / "nowhere.txt")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


@needs_posix
@pytest.mark.parametrize("make, kind", [
    (_fifo, "a FIFO"),
    (_device, "a character device"),
    (_link_to_file, "a symbolic link"),
    (_dangling_link, "a symbolic link"),
    (_folder, "it is a folder"),
])
def test_non_regular_targets_are_refused_and_left_alone(tmp_path, make, kind):
    path = make(tmp_path / "out.csv")
    before = os.lstat(path)
    with pytest.raises(OutputPathError, match=kind) as info:
        check_writable_output(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(OutputPathError, match=kind):
        write_text(path, "data")  # never opens a FIFO either, so this cannot hang
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    if make is _link_to_file:
        assert (tmp_path / "real.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*.part"))


def test_output_path_error_is_a_value_error_and_an_os_error():
    assert issubclass(OutputPathError, ValueError) and issubclass(OutputPathError, OSError)
    assert issubclass(RunInUseError, ValueError)
    assert str(OutputPathError("one line")) == "one line"


def test_check_writable_output_creates_nothing(tmp_path):
    target = tmp_path / "not" / "yet" / "out.csv"
    assert check_writable_output(target) == target
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.csv").write_text("x")
    assert check_writable_output(tmp_path / "old.csv") == tmp_path / "old.csv"  # a regular file is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]


def test_a_file_in_the_way_of_the_folder_is_reported(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_writable_output(tmp_path / "f" / "sub" / "out.csv")
    with pytest.raises(OutputPathError, match="not a folder"):
        write_text(tmp_path / "f" / "sub" / "out.csv", "x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(OutputPathError, match="empty"):
        check_writable_output("")
    with pytest.raises(OutputPathError, match="empty"):
        check_output_folder(" ")


def test_check_output_folder_accepts_new_and_existing_folders(tmp_path):
    assert check_output_folder(tmp_path / "runs") == tmp_path / "runs"
    assert check_output_folder(tmp_path) == tmp_path
    assert list(tmp_path.iterdir()) == []


def _read_only_folder(tmp_path: Path) -> Path:
    if IS_ROOT:
        pytest.skip("root ignores folder permissions; the /sys case covers root")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _sys_folder(tmp_path: Path) -> Path:
    """/sys refuses new files even to root: a read-only place every Linux has."""
    folder = Path("/sys")
    if not folder.is_dir():
        pytest.skip("no /sys here")
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return folder
    os.close(fd)
    os.unlink(probe)
    pytest.skip("/sys accepts new files here")


@needs_posix
@pytest.mark.parametrize("make", [_read_only_folder, _sys_folder])
def test_a_read_only_folder_is_named_in_the_error(tmp_path, make):
    folder = make(tmp_path)
    try:
        for target in (folder / "out.csv", folder / "new" / "out.csv"):
            message = rf"Cannot write {target}: the folder {folder} is not writable"
            with pytest.raises(OutputPathError, match=message):
                check_writable_output(target)
            with pytest.raises(OutputPathError, match=message):
                write_text(target, "x")
        with pytest.raises(OutputPathError, match=f"the folder {folder} is not writable"):
            check_output_folder(folder / "runs")
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o755)


# --------------------------------------------------------------------------- the run lock

def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held
        holder = read_lock_holder(tmp_path / ".lock")
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(RunInUseError, match=rf"Run {tmp_path} is in use by process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):  # free again
        pass


def test_lock_needs_an_existing_folder(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        RunLock(tmp_path / "missing").acquire()


@needs_posix
def test_lock_file_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputPathError, match="symbolic link"):
        RunLock(tmp_path).acquire()


_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("dc_io", sys.argv[1])
io = importlib.util.module_from_spec(spec); spec.loader.exec_module(io)
lock = io.RunLock(sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(_io.fcntl is None, reason="flock is POSIX")
def test_lock_contention_with_another_process_and_its_stale_lock_after_kill(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, _io.__file__, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=rf"in use by process {child.pid} since "):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()  # like kill -9: no chance to clean up
        child.wait(timeout=10)
        child.stdout.close()
    assert read_lock_holder(tmp_path / ".lock")["pid"] == child.pid  # the stale file is still there
    with RunLock(tmp_path):
        assert read_lock_holder(tmp_path / ".lock")["pid"] == os.getpid()


def test_a_stale_or_garbled_lock_file_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    (tmp_path / ".lock").write_text(f'{{"pid": {dead.pid}, "host": "elsewhere"}}\n')
    with RunLock(tmp_path):
        assert read_lock_holder(tmp_path / ".lock")["pid"] == os.getpid()
    (tmp_path / ".lock").write_bytes(b"\x00garbage")
    with RunLock(tmp_path):
        assert read_lock_holder(tmp_path / ".lock")["pid"] == os.getpid()


def test_without_proc_the_umask_read_at_import_is_used(monkeypatch, umask):
    monkeypatch.setattr(_io, "_HAS_PROC_UMASK", False)
    monkeypatch.setattr(_io, "_IMPORT_UMASK", 0o007)
    umask(0o022)  # not seen: only /proc could show it without changing it
    assert _io._file_mode() == 0o660
