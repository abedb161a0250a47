"""What a run will cost on this machine, before it starts, and the cap a public Space puts on it.

The Train tab says, for the chosen length, how long it takes (an epochs run) or how many epochs
fit (a minutes run). The pace comes from timing a few real training steps (`TrainStep`, the code
`train()` runs) of that task, encoder and precision on random images once per process; the final
evaluation's share uses the same estimate as a minutes budget (schedule.evaluation_seconds).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .config import TrainConfig, form_size_settings
from .folders import image_files, split_folders
from .schedule import SKIP_STEPS, evaluation_seconds

TIMED_STEPS = 3  # after SKIP_STEPS warm-up steps: a few seconds on CPUs for the photo encoders
# Training images when the data are not loaded yet and the chosen folder does not say (folder_sizes):
# digits' and CIFAR-10's training splits; a folder not chosen yet gets an estimate per this many images.
TRAIN_IMAGES = {"digits": 1438, "cifar10": 50_000}
TEST_IMAGES = {"digits": 359, "cifar10": 10_000}
PER_FOLDER_IMAGES = 10_000
SPACE_DEFAULT_MAX_MINUTES = 15.0

_rates: dict[tuple, float] = {}  # (task, arch, precision, batch, device) -> seconds per step
_lock = threading.Lock()  # two tabs asking at once time the steps once
_listings: dict[tuple[str, str], tuple[int, list[tuple[str, Optional[int]]]]] = {}  # _count_images


@dataclass
class Estimate:
    minutes: float  # wall clock of the whole run: training and the final evaluation
    epochs: float  # passes over the training split
    train_images: int
    per_images: bool  # True when train_images is a stand-in (a folder not read yet)
    evaluation_minutes: float = 0.0  # the final held-out evaluation's share of `minutes`

    def describe(self) -> str:
        per = f" per {self.train_images:,} images" if self.per_images else ""
        return f"about {format_minutes(self.minutes)}{per} on this machine"


def format_minutes(minutes: float) -> str:
    return f"{minutes * 60:.0f} s" if minutes < 1.5 else f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def counted(n: float, unit: str) -> str:
    """"1 epoch", "3 epochs", "0.2 minutes": a number with its unit, singular only for exactly one."""
    return f"{n:g} {unit}{'' if n == 1 else 's'}"


def seconds_per_step(cfg: TrainConfig) -> float:
    """Measured seconds of one training step of `cfg`'s task, encoder, precision and batch size."""
    from .config import model_for
    from .train import TrainStep, resolve_device

    device = resolve_device(cfg.device)
    key = _pace_key(cfg)
    with _lock:
        if key not in _rates:
            n = max(cfg.batch_size, 2) * 2
            gen = torch.Generator().manual_seed(0)
            side = cfg.image_size
            images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=gen).to(device)
            labels = torch.arange(n, device=device) % 2  # two classes: siamese pairs of both kinds
            model = model_for(cfg).to(device).to(memory_format=torch.channels_last)
            step = TrainStep(cfg, model, images, labels, 100, torch.Generator().manual_seed(0))
            batch = torch.arange(min(cfg.batch_size, n), device=device)
            for i in range(SKIP_STEPS + TIMED_STEPS):
                if i == SKIP_STEPS:
                    start = time.perf_counter()
                step(batch)
            _rates[key] = (time.perf_counter() - start) / TIMED_STEPS
        return _rates[key]


def folder_sizes(cfg: TrainConfig) -> Optional[tuple[int, int]]:
    """(training, test) images of the folder `cfg.data_dir` names, counted without decoding: a
    CIFAR-10 copy in class folders (perhaps a slice of it) or a user's folder already on disk. None
    where the folder does not say: none chosen yet, not there, or CIFAR-10's official files."""
    if not cfg.data_dir or cfg.dataset not in ("cifar10", "folder"):
        return None
    root = Path(cfg.data_dir).expanduser().resolve()
    try:
        parts = split_folders(root)
        if parts is not None:
            train, test = (_count_images(d, root) for d in parts)
        elif cfg.dataset == "folder" and root.is_dir():
            total = _count_images(root, root)
            test = round(total * cfg.test_fraction)
            train = total - test
        else:
            return None
    except OSError:  # unreadable: the run's own loading will say why
        return None
    return (train, test) if train > 0 else None


def _count_images(d: Path, root: Path) -> int:
    """len(image_files(d, root)), listed again only when a folder under `d` changed. The Train tab
    asks on every change of its form, and listing CIFAR-10's 60,000 files takes most of a second;
    adding, removing or renaming anything in a folder moves that folder's mtime, and the folders
    listed last time are a few dozen stats."""
    key = (str(d), str(root))
    seen = _listings.get(key)
    if seen is not None and all(_mtime(f) == t for f, t in seen[1]):
        return seen[0]
    dirs: list[str] = []
    started = time.time_ns()
    count = len(image_files(d, root, dirs))
    stamps = [(f, _mtime(f)) for f in dirs]
    # A folder changed in the second before the listing may change again with the same coarse
    # mtime (a copy still running): such a listing is not kept.
    if all(t is not None and t < started - 1_000_000_000 for _, t in stamps):
        _listings[key] = (count, stamps)
    return count


def _mtime(folder: str) -> Optional[int]:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:  # gone since: the listing is stale
        return None


def _pace_key(cfg: TrainConfig) -> tuple:
    from .train import resolve_device

    return (cfg.task, cfg.arch, cfg.width, cfg.head, cfg.turns, cfg.precision, cfg.batch_size, cfg.image_size, cfg.stem_stride,
            cfg.depth, resolve_device(cfg.device).type)


def record_pace(cfg: TrainConfig, steps: int, seconds: float) -> None:
    """A real run's own pace (its training steps' seconds) replaces the timed one. The few steps
    timed when the tab first opened may have met a busy machine, and that number would otherwise
    stand for the life of the server (it once said 2.6 h for a run of 11 minutes)."""
    if steps >= 20 and seconds > 0:  # a handful of steps is mostly warm-up
        with _lock:
            _rates[_pace_key(cfg)] = seconds / steps


def estimate(cfg: TrainConfig, train_images: Optional[int] = None) -> Estimate:
    """The minutes an epochs run takes, or the epochs a minutes run gets (`cfg.minutes` set)."""
    sizes = folder_sizes(cfg) if train_images is None else None
    if sizes is not None:
        train_images = sizes[0]
    per_images = train_images is None and cfg.dataset not in TRAIN_IMAGES
    n = train_images or TRAIN_IMAGES.get(cfg.dataset, PER_FOLDER_IMAGES)
    test = sizes[1] if sizes is not None else TEST_IMAGES.get(cfg.dataset, round(n * cfg.test_fraction))
    pace = seconds_per_step(cfg)
    steps_per_epoch = max(1, n // cfg.batch_size)
    # A forward pass costs about 40% of a training step per image (no backward, no augmentation).
    per_step_images = cfg.batch_size * (4 if cfg.task == "rotation" else 2)
    evaluation = evaluation_seconds(cfg.task, n, test, True, pace / per_step_images * 0.4)
    if cfg.minutes is not None:
        epochs = max(0.0, cfg.minutes * 60 - evaluation) / pace / steps_per_epoch
        return Estimate(cfg.minutes, epochs, n, per_images, evaluation / 60)
    return Estimate((steps_per_epoch * cfg.epochs * pace + evaluation) / 60, float(cfg.epochs), n, per_images,
                    evaluation / 60)


def space_max_minutes() -> Optional[float]:
    """On a public Hugging Face Space (SPACE_ID set) a visitor's run is capped; elsewhere no cap."""
    if not os.environ.get("SPACE_ID"):
        return None
    return float(os.environ.get("SSL_SPACE_MAX_MINUTES", SPACE_DEFAULT_MAX_MINUTES))


def cap_for_space(cfg: TrainConfig, cap: Optional[float]) -> str:
    """Keep a visitor's run within `cap` minutes: a longer minutes run is shortened (the returned
    note says so); an epochs run estimated longer is refused with a ValueError saying what fits."""
    if cap is None:
        return ""
    if cfg.minutes is not None:
        if cfg.minutes <= cap:
            return ""
        cfg.minutes = cap
        capped = counted(cap, "minute")
        return f" Runs on this public Space are capped at {capped}: this one trains for {capped}."
    guess = estimate(cfg)
    if guess.minutes > cap:
        fits = math.floor(cfg.epochs * cap / guess.minutes)
        capped = counted(cap, "minute")
        # Even one epoch may not fit (a large folder): then only a minutes run can be offered.
        choice = f"Choose at most {counted(fits, 'epoch')}, or train for {capped}." if fits >= 1 else f"Train for {capped} instead."
        raise ValueError(f"{counted(cfg.epochs, 'epoch')} would take {guess.describe().removeprefix('about ')}, and runs "
                         f"on this public Space are capped at {capped}. {choice}")
    return ""


def describe_run(task: str, dataset: str, epochs: object, minutes: object, batch_size: object = None,
                 data_dir: Optional[str] = None, image_size: object = None) -> str:
    """One sentence for the Train tab, before a run starts: what the chosen length costs here, for
    the chosen folder's images when it is on disk, at the chosen image size."""
    try:
        cfg = TrainConfig(task=task, dataset="folder" if dataset == "zip" else dataset, epochs=None if minutes else epochs,
                          batch_size=int(batch_size) if batch_size else None, minutes=float(minutes) if minutes else None,
                          data_dir=None if dataset == "zip" else (data_dir or "").strip() or None,
                          **form_size_settings(dataset, image_size))
        guess = estimate(cfg)
    except (ValueError, TypeError) as exc:
        return f"({exc})"
    cap = space_max_minutes()
    if cfg.minutes is not None:
        per = f" per {guess.train_images:,} images" if guess.per_images else ""
        text = f"{format_minutes(cfg.minutes)}: about {guess.epochs:.1f} epochs{per} fit on this machine, evaluation included."
        if guess.epochs < 0.1:  # "about 0.0 epochs" says nothing a visitor can act on
            text = (f"{format_minutes(cfg.minutes)}: less than a tenth of an epoch{per} fits on this machine; the final "
                    f"evaluation alone takes about {format_minutes(guess.evaluation_minutes)}. Choose more minutes.")
    else:
        text = f"{counted(cfg.epochs, 'epoch')}: {guess.describe()}, evaluation included."
    if cap is not None and (cfg.minutes or guess.minutes) > cap:
        text += f" Runs on this public Space are capped at {counted(cap, 'minute')}."
    return text
