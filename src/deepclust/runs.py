"""Run folders: one new folder per run, never overwritten, with every output path derived here.

A run folder holds ``status.json`` from the moment it exists: "running" while work goes on,
"complete" at the end, "interrupted" after Ctrl-C, so a folder left behind says what it is.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ._io import write_json


@dataclass(frozen=True)
class RunPaths:
    """Every file a run writes, derived from its folder in one place."""

    root: Path

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def assignments(self) -> Path:
        return self.root / "assignments.csv"

    @property
    def centers(self) -> Path:
        return self.root / "cluster_centers.npy"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings.npy"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def preprocessing(self) -> Path:
        return self.root / "preprocessing.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def k_selection(self) -> Path:
        return self.root / "k_selection.json"

    # An image folder with reference/ and test/ (pipeline.folder)
    @property
    def class_mappings(self) -> Path:
        return self.root / "class_mappings.json"

    @property
    def test_assignments(self) -> Path:
        return self.root / "test_assignments.csv"

    @property
    def test_confusion_plot(self) -> Path:
        return self.plots / "confusion_matrix_test.png"

    # A 'deepclust evaluate' folder (pipeline.evaluate)
    @property
    def folds(self) -> Path:
        return self.root / "folds.json"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.md"


def create_run_dir(out: str | os.PathLike, name: str) -> RunPaths:
    """Make a new, empty folder ``out/<timestamp>-<name>``; add a counter instead of reusing a name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S") + "-" + _slug(name)
    for counter in range(10_000):
        root = out / (stem if counter == 0 else f"{stem}-{counter}")
        try:
            root.mkdir()  # atomic: fails if the folder exists, so an earlier run is never reused
        except FileExistsError:
            continue
        paths = RunPaths(root)
        set_status(paths, "running")
        return paths
    raise RuntimeError(f"Could not create a new run folder under {out}: too many runs named {stem}.")


def versions() -> dict:
    """The versions that decide a run's results, recorded in its ``config.json``."""
    import platform

    import numpy as np
    import torch

    from . import __version__

    return {"deepclust": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def set_status(paths: RunPaths, status: str, **extra) -> None:
    write_json(paths.status, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"
