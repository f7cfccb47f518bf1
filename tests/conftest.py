"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest

import deepclust.deep.base as deep_base


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
