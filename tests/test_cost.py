"""ssl_core.cost: what a run will cost before it starts, checked against real runs, and the Space cap."""

from __future__ import annotations

import time

import pytest

from ssl_core import cost
from ssl_core.config import TrainConfig
from ssl_core.train import train

DIGITS = dict(dataset="digits", device="cpu", precision="fp32", seed=0)


def test_the_pace_is_timed_once_per_task_and_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(task="siamese", epochs=1, **DIGITS)
    first = cost.seconds_per_step(cfg)
    assert 0 < first < 5
    # The second ask is the cached number, not another timing of the steps.
    monkeypatch.setattr("ssl_core.train.TrainStep", lambda *a, **k: pytest.fail("timed again"))
    assert cost.seconds_per_step(TrainConfig(task="siamese", epochs=7, **DIGITS)) == first


def test_an_epochs_estimate_is_near_the_run_it_describes() -> None:
    cfg = TrainConfig(task="rotation", epochs=2, **DIGITS)
    guess = cost.estimate(cfg)
    assert guess.epochs == 2 and guess.train_images == 1438 and not guess.per_images
    t = time.perf_counter()
    train(TrainConfig(task="rotation", epochs=2, **DIGITS))
    actual = (time.perf_counter() - t) / 60
    # The estimate leaves out loading, probes and frames, and the machine may be shared: a factor of
    # three either way still tells a visitor "seconds" from "minutes", which is what it is for.
    assert actual / 3 <= guess.minutes <= actual * 3, (guess.minutes, actual)


def test_a_minutes_estimate_counts_the_epochs_that_fit_after_the_evaluation() -> None:
    one = cost.estimate(TrainConfig(task="simclr", minutes=1, **DIGITS))
    two = cost.estimate(TrainConfig(task="simclr", minutes=2, **DIGITS))
    assert one.minutes == 1 and two.minutes == 2
    # The evaluation is paid once, so twice the minutes buys more than twice the epochs.
    assert 0 < one.epochs and two.epochs >= 2 * one.epochs
    folder = cost.estimate(TrainConfig(task="simclr", dataset="folder", minutes=1, device="cpu", precision="fp32"))
    assert folder.per_images and folder.train_images == cost.PER_FOLDER_IMAGES


def test_the_train_tab_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert cost.describe_run("rotation", "digits", 1, None).startswith("1 epoch: about ")
    text = cost.describe_run("rotation", "digits", None, 2)
    assert text.startswith("2 min: about ") and "epochs fit on this machine, evaluation included" in text
    assert cost.describe_run("rotation", "zip", None, 2).count("per 10,000 images") == 1
    assert cost.describe_run("rotation", "digits", None, -1).startswith("(")  # a bad form value: said, not raised
    monkeypatch.setenv("SPACE_ID", "someone/ssl-playground")
    monkeypatch.setenv("SSL_SPACE_MAX_MINUTES", "1")
    assert cost.describe_run("rotation", "digits", None, 2).endswith("Runs on this public Space are capped at 1 minutes.")


def test_a_space_caps_a_visitors_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert cost.space_max_minutes() is None
    monkeypatch.setenv("SPACE_ID", "someone/ssl-playground")
    assert cost.space_max_minutes() == cost.SPACE_DEFAULT_MAX_MINUTES
    monkeypatch.setenv("SSL_SPACE_MAX_MINUTES", "0.2")
    cap = cost.space_max_minutes()
    long = TrainConfig(task="rotation", minutes=30, **DIGITS)
    assert "capped at 0.2 minutes" in cost.cap_for_space(long, cap) and long.minutes == 0.2
    short = TrainConfig(task="rotation", minutes=0.1, **DIGITS)
    assert cost.cap_for_space(short, cap) == "" and short.minutes == 0.1
    # An epochs run that would not fit is refused with the number of epochs that would.
    with pytest.raises(ValueError, match=r"capped at 0.2 minutes. Choose at most \d+ epochs"):
        cost.cap_for_space(TrainConfig(task="rotation", epochs=400, **DIGITS), cap)
