"""One place that turns any error of a command into one clear line and an exit status.

``deepclust`` prints ``deepclust: error: <what>, <fix>`` and exits 2 for anything the user can fix
(a bad option or file, missing data, memory), 1 for an internal error (a bug: the line says so and
asks for ``--debug``), 130 after Ctrl-C and 143 after SIGTERM. The traceback is shown only with
``--debug``. SIGTERM is turned into :class:`Terminated`, a KeyboardInterrupt, so a run stopped by a
scheduler or ``kill`` is marked "interrupted" and resumable exactly as after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import re
import signal
import threading
from collections.abc import Iterator

EXIT_USER = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process killed by it


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled like Ctrl-C (the run is marked interrupted and can be resumed)."""


class OutOfMemory(MemoryError):
    """Memory ran out, or would: the message is the whole line (what, how big, how to fix)."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for a MemoryError and for torch's allocation failures (CPU allocator, CUDA OOM)."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, RuntimeError) and _is_allocation(_first_line(err))


def ran_out_of_memory(err: BaseException, doing: str, *, network: bool = True) -> OutOfMemory:
    """The one-line error for an allocation failure ``err`` raised while ``doing`` (e.g. "training dec");
    ``network``: what was running trains a network, so the batch size and architecture are the fix."""
    found = re.search(r"(?:tried to|unable to) allocate ([0-9.]+) ?([KMGT]i?B|bytes)", str(err),
                      re.IGNORECASE)
    if found is None:
        size = ""
    elif found.group(2).lower() == "bytes":
        size = f" (could not allocate {int(float(found.group(1))) / 1e9:.1f} GB more)"
    else:
        size = f" (could not allocate {float(found.group(1)):g} {found.group(2)} more)"
    fix = ("lower --batch-size, use a smaller architecture (-a) or --resize" if network else
           "use fewer images, a smaller --resize or smaller settings of the method")
    return OutOfMemory(f"ran out of memory while {doing}{size}; {fix}, or free memory, then run again.")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread; the old handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe_error(err: BaseException) -> tuple[str, int]:
    """(one line to print after ``deepclust: ``, exit status) for ``err``."""
    if isinstance(err, Terminated):
        return ("terminated (SIGTERM); an interrupted run resumes with 'deepclust run --resume RUN_DIR' "
                "(its status.json says so).", EXIT_TERMINATED)
    if isinstance(err, KeyboardInterrupt):
        return "interrupted.", EXIT_INTERRUPTED
    text = _first_line(err)
    if isinstance(err, OutOfMemory):
        return f"error: {text}", EXIT_USER
    if is_out_of_memory(err):
        return (f"error: out of memory ({text or 'MemoryError'}), use a smaller architecture, --batch-size "
                "or --resize.", EXIT_USER)
    if isinstance(err, (ValueError, LookupError, ImportError, UnicodeError)):
        # Our own messages are written for the user, a few (missing data files) deliberately on several
        # lines; a foreign one's first line is enough.
        return f"error: {str(err).strip() if _ours(err) else text}", EXIT_USER
    if isinstance(err, OSError):
        return f"error: {_os_error(err)}", EXIT_USER
    return (f"internal error: {type(err).__name__}: {text}; this is a bug in deepclust, rerun with --debug "
            "for the traceback and report it.", EXIT_INTERNAL)


def _ours(err: BaseException) -> bool:
    module = type(err).__module__
    return module == "builtins" or module.startswith("deepclust")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = f"missing key {err.args[0]!r}"
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[:1]) if len(lines) <= 1 else f"{lines[0]} ..."


def _is_allocation(text: str) -> bool:
    lowered = text.lower()
    return "can't allocate memory" in lowered or "out of memory" in lowered or "not enough memory" in lowered


def _os_error(err: OSError) -> str:
    """An OSError that names its file, whether or not the raiser gave one."""
    if err.errno is None and err.filename is None:  # raised with a message, which says it all
        return (str(err).strip() if _ours(err) else _first_line(err)) or type(err).__name__
    what = err.strerror or _first_line(err) or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # the disk, not the path, is the problem
        from ._io import WRITE_ERRNOS, write_error

        if err.filename is not None:
            return str(write_error(err.filename, err))
        return f"{what}: {WRITE_ERRNOS[err.errno].format(option='--out')}."
    if err.filename is not None:
        target = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else f"{err.filename}"
        return f"{target}: {what}; check the path and its permissions."
    return f"{what}; check the paths given and their permissions."


__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USER", "OutOfMemory", "Terminated",
           "describe_error", "is_out_of_memory", "ran_out_of_memory", "sigterm_as_interrupt"]
