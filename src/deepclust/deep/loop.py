"""The resumable epoch loop of every trained stage, written once: restore, count epochs, checkpoint.

Autoencoder pretraining, the clustering stages of DEC, IDEC and DCN, and DeepCluster all run

    loop = EpochLoop("cluster", epochs, folder=checkpoint_dir, generator=g, stateful={"model": net, ...})
    state = loop.restore()            # None on a fresh start; else the networks, optimisers and random
    for epoch in loop:                # streams are as they were after the last finished epoch
        ...one epoch...
        loop.save(epoch + 1, history, **stage_specific_state)

so an interrupted fit started again on the same folder continues where it stopped and ends exactly where
an uninterrupted one ends. Checkpoints hold tensors and plain values only (``TrainingState``).

Under torchrun rank 0 alone writes checkpoints and reads the one to resume from, and sends it to the
other ranks, so every rank resumes from the same state (their ``folder`` is not read).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .. import distributed as D
from ..progress import progress
from .checkpoint import TrainingState


class EpochLoop:
    """Epochs ``start..epochs-1`` of one stage, with a progress bar and a checkpoint after each.

    Parameters
    ----------
    stage : str
        The checkpoint's name in ``folder`` (``<stage>.pt``).
    epochs : int
        The epoch count the stage runs to.
    folder : path or None
        Where checkpoints live; None: no checkpoints (and nothing to resume).
    generator : torch.Generator
        The stage's random stream, saved and restored with every checkpoint.
    stateful : dict
        Checkpoint key -> object with ``state_dict`` / ``load_state_dict`` (networks, heads, optimisers).
    torch_rng : bool
        Also save and restore torch's global random stream (dropout drawn from it).
    desc, verbose :
        The progress bar's label, and whether to show it (None: on a terminal).
    """

    def __init__(self, stage: str, epochs: int, *, folder: str | Path | None, generator: torch.Generator,
                 stateful: dict[str, Any], torch_rng: bool = False, desc: str | None = None, verbose=None):
        self.stage = stage
        self.epochs = int(epochs)
        self.generator = generator
        self.stateful = stateful
        self.torch_rng = torch_rng
        self.desc = desc or stage
        self.verbose = verbose
        self.start = 0
        self.end = self.epochs
        self.bar = None
        self._checkpoints = TrainingState(Path(folder)) if folder else None

    def restore(self) -> dict | None:
        """Load the last checkpoint into the stateful objects and the random streams; return it (with
        ``epoch``, ``history`` and the stage's own entries), or None when there is none.
        Under torchrun a collective: rank 0's checkpoint is restored on every rank."""
        state = self._checkpoints.load(self.stage) if self._checkpoints and D.is_main_process() else None
        state = D.broadcast_object(state)
        if state is None:
            return None
        for key, obj in self.stateful.items():
            obj.load_state_dict(state[key])
        self.generator.set_state(state["generator"])
        if self.torch_rng:
            torch.set_rng_state(state["torch_rng"])
        self.start = int(state["epoch"])
        return state

    def stop(self) -> None:
        """Run no further epoch (a stage that had converged when it was interrupted)."""
        self.end = self.start

    def __iter__(self) -> Iterator[int]:
        self.bar = progress(range(self.start, self.end), total=self.epochs, desc=self.desc, unit="epoch",
                            enabled=self.verbose)
        self.bar.update(self.start)
        yield from self.bar

    def set_postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def save(self, epoch: int, history: list[dict], **extra) -> None:
        """Checkpoint the state after ``epoch`` epochs (a no-op without a folder, and on ranks other
        than 0: they hold the same state)."""
        if self._checkpoints is None or not D.is_main_process():
            return
        state = {key: obj.state_dict() for key, obj in self.stateful.items()}
        state["generator"] = self.generator.get_state()
        if self.torch_rng:
            state["torch_rng"] = torch.get_rng_state()
        self._checkpoints.save(self.stage, **state, history=history, epoch=epoch, **extra)
