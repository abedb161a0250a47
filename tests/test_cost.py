"""ssl_core.cost: what a run will cost before it starts, checked against real runs, and the Space cap."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

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
    # 64 px is priced as the run would train: its own step, through the strided first layer.
    with monkeypatch.context() as m:
        priced = []
        m.setattr(cost, "seconds_per_step", lambda cfg: priced.append((cfg.image_size, cfg.stem_stride)) or 0.01)
        assert cost.describe_run("rotation", "zip", None, 2, None, None, 64).startswith("2 min: about ")
    assert priced == [(64, 2)]
    assert cost.describe_run("rotation", "digits", None, 2, None, None, 64) == (
        "(64 px is for folders of photos: digits images are smaller, so they would only be enlarged)")
    # A budget the evaluation alone would fill: said so, with what to do, rather than "about 0.0 epochs".
    with monkeypatch.context() as m:
        m.setattr(cost, "seconds_per_step", lambda cfg: 30.0)  # a very slow or very busy machine
        text = cost.describe_run("siamese", "cifar10", None, 5)
    assert text.startswith("5 min: less than a tenth of an epoch fits") and text.endswith("Choose more minutes.")
    monkeypatch.setenv("SPACE_ID", "someone/ssl-playground")
    monkeypatch.setenv("SSL_SPACE_MAX_MINUTES", "1")
    assert cost.describe_run("rotation", "digits", None, 2).endswith("Runs on this public Space are capped at 1 minute.")


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
    # An epochs run that would not fit is refused, offering what would (how many epochs depends on this machine's pace).
    with pytest.raises(ValueError, match=r"capped at 0.2 minutes\. (Choose at most \d+ epochs?, or train|Train) for 0.2 minutes"):
        cost.cap_for_space(TrainConfig(task="rotation", epochs=400, **DIGITS), cap)
    # With a known pace: one epoch fits ("1 epoch", not "1 epochs"), or none does (no epoch count offered).
    for minutes, said in ((0.15, "Choose at most 1 epoch, or train for 0.2 minutes."), (0.5, "Train for 0.2 minutes instead.")):
        monkeypatch.setattr(cost, "estimate", lambda cfg, m=minutes: cost.Estimate(epochs=cfg.epochs, minutes=m * cfg.epochs,
                                                                                  train_images=1437, per_images=False))
        with pytest.raises(ValueError) as refused:
            cost.cap_for_space(TrainConfig(task="rotation", epochs=2, **DIGITS), cap)
        assert str(refused.value).startswith("2 epochs would take") and str(refused.value).endswith(said)


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 32), (i * 9 % 256, 80, 160)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")  # skipped, as loading skips it


def test_the_estimate_counts_the_chosen_folders_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice of CIFAR-10 or a user's folder is estimated for its own images, not for 50,000 or
    'per 10,000 images': the Train tab said 'about 8 min' for a 2,000-image slice that took 43 s."""
    monkeypatch.delenv("SPACE_ID", raising=False)
    for split, n in (("train", 30), ("test", 10)):
        for name in ("cat", "dog"):
            _images(tmp_path / "slice" / split / name, n // 2)
    cfg = TrainConfig(task="rotation", dataset="cifar10", data_dir=str(tmp_path / "slice"), epochs=3, device="cpu",
                      precision="fp32")
    assert cost.folder_sizes(cfg) == (30, 10)
    sliced, full = cost.estimate(cfg), cost.estimate(TrainConfig(**dict(cfg.to_dict(), data_dir=None)))
    assert sliced.train_images == 30 and not sliced.per_images and full.train_images == 50_000
    assert sliced.minutes < full.minutes / 100
    _images(tmp_path / "mine" / "a", 20)
    _images(tmp_path / "mine" / "b", 20)
    mine = TrainConfig(task="simclr", dataset="folder", data_dir=str(tmp_path / "mine"), minutes=1, device="cpu",
                       precision="fp32")
    assert cost.folder_sizes(mine) == (32, 8)  # 20% of a folder without its own split is held out
    assert "per " not in cost.describe_run("simclr", "folder", None, 1, None, str(tmp_path / "mine"))
    # No folder yet, one not there, or CIFAR-10's official files: the usual stand-ins.
    for where in (None, str(tmp_path / "nowhere")):
        assert cost.folder_sizes(TrainConfig(**dict(mine.to_dict(), data_dir=where))) is None
    (tmp_path / "official" / "cifar-10-batches-py").mkdir(parents=True)
    assert cost.folder_sizes(TrainConfig(**dict(cfg.to_dict(), data_dir=str(tmp_path / "official")))) is None
    assert "per 10,000 images" in cost.describe_run("simclr", "folder", None, 1, None, str(tmp_path / "nowhere"))


def test_a_folder_is_listed_again_only_when_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Train tab asks for the folder's size on every change of its form; listing 60,000 files
    took 0.6-0.8 s each time. An unchanged folder is counted from the last listing, and a file added
    or removed anywhere under it (a class folder two levels down included) is counted again."""
    import os

    for split in ("train", "test"):
        for name in ("cat", "dog"):
            _images(tmp_path / "set" / split / name, 5)
    (tmp_path / "set" / "train" / "empty").mkdir()  # no images yet: its own changes must count too
    old = time.time() - 100  # as if extracted earlier: a folder changed this second is not trusted
    for d, _, _ in os.walk(tmp_path / "set"):
        os.utime(d, (old, old))
    listings = []
    real = cost.image_files
    monkeypatch.setattr(cost, "image_files", lambda d, root, dirs=None: listings.append(d) or real(d, root, dirs))
    cfg = TrainConfig(task="rotation", dataset="cifar10", data_dir=str(tmp_path / "set"), epochs=1)
    assert cost.folder_sizes(cfg) == (10, 10) and len(listings) == 2
    assert cost.folder_sizes(cfg) == (10, 10) and len(listings) == 2  # not listed again
    Image.new("RGB", (32, 32)).save(tmp_path / "set" / "train" / "empty" / "new.png")
    assert cost.folder_sizes(cfg) == (11, 10) and len(listings) == 3  # only train/ again
    (tmp_path / "set" / "test" / "dog" / "0.png").unlink()
    assert cost.folder_sizes(cfg) == (11, 9)
