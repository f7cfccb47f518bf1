"""Safe file writes: atomic, never over anything but a regular file, with the umask's permissions.

A reader sees the old file or the complete new one, never half of one. A path that holds a device,
a FIFO, a symbolic link or a folder is refused rather than replaced, and the errors name the path
and the fix. :class:`RunLock` keeps a run folder to one writing process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

try:  # POSIX; on Windows RunLock falls back to an exclusive create
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None


class OutputPathError(OSError, ValueError):
    """An output path that cannot or must not be written (a device, a folder, a read-only place...).

    Both an OSError and a ValueError (like :class:`io.UnsupportedOperation`), so callers that report
    bad input as ValueError print its one-line message.
    """


class RunInUseError(OSError, ValueError):
    """Another live process holds the run folder's lock (an OSError and a ValueError, as above)."""


def _proc_umask() -> int | None:
    """The umask from /proc/self/status (Linux 4.7+): read without changing it, so thread-safe."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return None


def _read_umask() -> int:
    """The process umask: from /proc where it is there, else the value read once at import."""
    mask = _proc_umask() if _HAS_PROC_UMASK else None
    return _IMPORT_UMASK if mask is None else mask


def _umask_at_import() -> int:
    mask = _proc_umask()
    if mask is not None:
        return mask
    # Setting and restoring is the only portable way; a thread creating a file in between would get
    # umask 0o022, so this runs once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_HAS_PROC_UMASK = _proc_umask() is not None
_IMPORT_UMASK = _umask_at_import()


def _file_mode() -> int:
    """Mode for a new file, as open() would give it: 0o666 less the current umask."""
    return 0o666 & ~_read_umask()


def _describe(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def _refuse_non_regular(path: Path) -> None:
    """Raise OutputPathError if ``path`` exists and is anything but a regular file (links included)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError as exc:
        raise OutputPathError(f"Cannot write {path}: a part of that path is a file, not a folder.") from exc
    kind = _describe(mode)
    if kind is None:
        return
    if stat.S_ISDIR(mode):
        raise OutputPathError(f"Cannot write {path}: it is a folder. Give a file name inside it, such as "
                              f"{path / 'out.csv'}.")
    raise OutputPathError(f"Refusing to write {path}: it is {kind}, and deepclust replaces only regular "
                          "files. Choose another path, or remove it first if a file should go there.")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _folder_error(folder: Path, target: Path, exc: OSError) -> OutputPathError:
    why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           errno.EROFS: "it is on a read-only file system", errno.ENOSPC: "the disk is full",
           errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno, exc.strerror or str(exc))
    return OutputPathError(f"Cannot write {target}: the folder {folder} is not writable ({why}). Choose "
                           f"another output path or make {folder} writable.")


def _make_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)  # mode 0o777 less the umask, as for every folder here
    except (FileExistsError, NotADirectoryError) as exc:
        raise OutputPathError(f"Cannot write {path}: {_nearest_existing(parent)} is a file, not a "
                              "folder.") from exc
    except OSError as exc:
        raise _folder_error(_nearest_existing(parent), path, exc) from exc


def check_writable_output(path: str | os.PathLike) -> Path:
    """Check, before any work, that :func:`atomic_open` will be able to write the file ``path``.

    Nothing is created: the path must be absent or a regular file, and its folder (or, when that
    does not exist yet, the closest existing ancestor, where it would be made) must be a writable
    folder. Returns ``path`` as a Path; raises :class:`OutputPathError` with one line naming the
    problem and the fix.
    """
    if str(path).strip() == "":
        raise OutputPathError("The output path is empty; give a file name such as predictions.csv.")
    path = Path(path).expanduser()
    _refuse_non_regular(path)
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OutputPathError(f"Cannot write {path}: {ancestor} is a file, not a folder.")
    _probe_writable(ancestor, path)
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """Check, before any work, that folder ``path`` exists as a writable folder or can be made.

    For options such as ``run --out`` that name a folder to create files in. Returns ``path`` as a
    Path; raises :class:`OutputPathError` naming the problem and the fix. Nothing is created.
    """
    if str(path).strip() == "":
        raise OutputPathError("The output folder is empty; give a folder such as runs/.")
    path = Path(path).expanduser()
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():  # follows a link to a folder, which is fine for a folder
        what = "is a file" if ancestor.is_file() else f"is {_describe(os.lstat(ancestor).st_mode)}"
        raise OutputPathError(f"Cannot use {path} as an output folder: {ancestor} {what}, not a folder. "
                              "Choose another path.")
    _probe_writable(ancestor, path)
    return path


def _probe_writable(folder: Path, target: Path) -> None:
    """Create and delete a temporary file in ``folder``: the one test that holds for root and read-only
    mounts alike (``os.access`` says yes to root on a read-only bind mount)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepclust-probe.", dir=folder)
    except OSError as exc:
        raise _folder_error(folder, target, exc) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    ``path`` must be absent or a regular file: a device, FIFO, symbolic link or folder there raises
    :class:`OutputPathError` and is left as it was. The file gets mode 0o666 less the umask, as a
    plain ``open`` would give it (``mkstemp`` alone gives 0o600). Missing parent folders are made.
    """
    path = Path(path)
    _refuse_non_regular(path)
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise _folder_error(path.parent, path, exc) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            with contextlib.suppress(OSError):  # some file systems (FAT, some FUSE) have no modes
                os.fchmod(f.fileno(), _file_mode())
            yield f
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                raise write_error(path, exc) from exc
        _refuse_non_regular(path)  # something may have appeared there while we wrote
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS and not isinstance(exc, OutputPathError):
            raise write_error(path, exc) from exc  # a full disk while writing: name the file, not the errno
        raise


#: errno of a write that the disk, not the program, refused: each gets one line naming the file.
WRITE_ERRNOS = {errno.ENOSPC: "free some space or pass {option} elsewhere",
                errno.EDQUOT: "free some space under your quota or pass {option} elsewhere",
                errno.EROFS: "pass {option} on a writable file system",
                errno.EIO: "the disk may be failing; pass {option} elsewhere",
                errno.EFBIG: "pass {option} on a file system that takes files this large"}


def write_error(path: str | os.PathLike, exc: OSError, *, option: str = "--out") -> OutputPathError:
    """One line for an OSError raised while writing ``path``: the cause, the file and the fix.

    "No space left on device while writing runs/x/embeddings.npy: free some space or pass --out
    elsewhere; the previous file, if any, is unchanged." ``option`` is the one that moves the file.
    """
    cause = (exc.strerror or os.strerror(exc.errno)) if exc.errno else (str(exc) or type(exc).__name__)
    fix = WRITE_ERRNOS.get(exc.errno, "check the disk and the folder's permissions").format(option=option)
    error = OutputPathError(f"{cause} while writing {path}: {fix}; the previous file, if any, is unchanged.")
    error.errno = exc.errno  # still tells the kind of failure to code that asks
    return error


LOCK_NAME = ".lock"


class RunLock:
    """One writing process per run folder: ``with RunLock(run_dir): ...`` around a run or a resume.

    The lock is an advisory ``flock`` on ``run_dir/.lock``, a file that also records the holder's
    pid, host and start time for the error message. The kernel drops the lock when its process
    ends however it ends (kill -9 included), so a lock file left behind by a dead process is stale
    and simply taken over. Where ``flock`` does not exist (Windows) an exclusive create is used, and
    a lock file whose process is gone from this host is taken over.

    Raises :class:`RunInUseError` ("run X is in use by process N ...") when a live process holds it,
    and :class:`OutputPathError` when the folder is missing or not writable.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock.")
        if not self.run_dir.is_dir():
            raise OutputPathError(f"Run folder {self.run_dir} does not exist or is not a folder.")
        self._fd = self._acquire_flock() if fcntl is not None else self._acquire_exclusive()
        return self

    def release(self) -> None:
        """Delete the lock file (while still holding it, so no one takes a lock on a deleted file)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(FileNotFoundError):
                if _same_file(fd, self.path):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _open(self, flags: int) -> int:
        _refuse_non_regular(self.path)
        try:
            return os.open(self.path, flags | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), _file_mode())
        except FileExistsError:
            raise
        except OSError as exc:
            raise _folder_error(self.run_dir, self.path, exc) from exc

    def _acquire_flock(self) -> int:
        for _ in range(100):  # retried only when the file was replaced between open and flock
            fd = self._open(os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._in_use() from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):  # not deleted by a releasing holder since we opened it
                self._write_holder(fd)
                return fd
            os.close(fd)
        raise RunInUseError(f"Could not lock {self.path}: it keeps being replaced by another process.")

    def _acquire_exclusive(self) -> int:  # pragma: no cover - Windows only
        for _ in range(2):
            try:
                fd = self._open(os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                holder = read_lock_holder(self.path)
                here = holder is not None and holder.get("host") == socket.gethostname()
                if here and not _pid_alive(holder.get("pid")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                raise self._in_use() from None
            self._write_holder(fd)
            return fd
        raise self._in_use()

    def _write_holder(self, fd: int) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())

    def _in_use(self) -> RunInUseError:
        holder = read_lock_holder(self.path) or {}
        who = f"process {holder['pid']}" if "pid" in holder else "another process"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on host {holder['host']}"
        since = f" since {holder['started']}" if holder.get("started") else ""
        return RunInUseError(f"Run {self.run_dir} is in use by {who}{since}; wait for it to finish or "
                             "stop it, then try again.")


def read_lock_holder(path: str | os.PathLike) -> dict | None:
    """The pid/host/started record in a lock file, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.loads(f.read(4096))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _pid_alive(pid) -> bool:  # pragma: no cover - used by the Windows fallback
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True



def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def jsonable_params(params: dict) -> dict:
    """``params`` with every value that JSON cannot hold replaced by its ``repr`` (for config files)."""
    out = {}
    for key, value in params.items():
        try:
            json.dumps(value, default=_json_default)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out


def _json_default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text of dict rows; the columns are the union of the keys, in first-seen order."""
    import csv
    import io

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
