"""Progress bars: one helper so every long loop shows epoch, loss and speed the same way."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

from .distributed import is_main_process


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool | None = None, leave: bool = False):
    """Return a tqdm bar; hidden when stderr is not a terminal unless DEEPCLUST_PROGRESS=1.

    Pass ``enabled=False`` to silence it (tests, library use inside other loops).
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled),
                leave=leave, dynamic_ncols=True)


def progress_enabled(enabled: bool | None = None) -> bool:
    """Resolve ``None`` to: on when stderr is a terminal, or as DEEPCLUST_PROGRESS says (1/0).
    Under torchrun only rank 0 shows bars (the others would print the same ones over them)."""
    if not is_main_process():
        return False
    if enabled is not None:
        return bool(enabled)
    env = os.environ.get("DEEPCLUST_PROGRESS")
    return sys.stderr.isatty() if env is None else env not in ("0", "false", "")
