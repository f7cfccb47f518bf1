"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest

import deepclust.deep.base as deep_base

# A 3-d dense autoencoder small enough for tests on a few hundred images.
TINY_DENSE_ARCH = {"name": "tiny-dense",
                   "encoder": [{"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"},
                               {"type": "dense", "units": 3}],
                   "decoder": "mirror", "output_activation": "sigmoid"}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny inputs gain nothing from threads, and on a busy machine two threads run several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kill_pretraining(monkeypatch):
    """``kill_pretraining(epoch, exc)``: the next pretraining raises ``exc`` right after saving ``epoch``,
    as a Ctrl-C or a crash would; ``kill_pretraining(None)`` restores normal training."""
    real_train = deep_base.train_autoencoder

    def arm(epoch: int | None, exc: type[BaseException] = KeyboardInterrupt) -> None:
        if epoch is None:
            monkeypatch.setattr(deep_base, "train_autoencoder", real_train)
            return

        def train_then_die(*args, on_epoch, **kwargs):
            def hook(done, row):
                on_epoch(done, row)  # the checkpoint of this epoch is written first
                if done == epoch:
                    raise exc

            return real_train(*args, on_epoch=hook, **kwargs)

        monkeypatch.setattr(deep_base, "train_autoencoder", train_then_die)

    return arm


@pytest.fixture
def kill_after_checkpoint(monkeypatch):
    """``kill_after_checkpoint(stage, epoch, exc)``: training raises ``exc`` right after the checkpoint of
    ``stage`` at ``epoch`` is written; ``kill_after_checkpoint(None)`` saves normally again. Either way
    ``kill_after_checkpoint.saved`` lists the (stage, epoch) of each checkpoint written since."""
    from deepclust.deep import checkpoint

    real_save = checkpoint.TrainingState.save
    saved: list[tuple[str, int]] = []  # (stage, epoch) of every checkpoint written since arming

    def arm(stage: str | None, epoch: int = 0, exc: type[BaseException] = KeyboardInterrupt) -> None:
        saved.clear()

        def save_then_die(self, name, **state):
            real_save(self, name, **state)
            saved.append((name, state.get("epoch")))
            if stage is not None and name == stage and state.get("epoch") == epoch:
                raise exc

        monkeypatch.setattr(checkpoint.TrainingState, "save", save_then_die)

    arm.saved = saved
    return arm
