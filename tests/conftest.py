"""Shared fixtures: the digits split, a slice of the shared CIFAR-10 JPEG copy, a tiny fake CIFAR-10 in the real on-disk layout, trained models."""

from __future__ import annotations

import os
import socket
import tarfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from ssl_core import TASKS

# Tests never touch the network, and two cores are all CI has.
os.environ.setdefault("SSL_DATA_DIR", "/nonexistent-ssl-data")
torch.set_num_threads(min(2, os.cpu_count() or 1))

# The shared CIFAR-10 JPEG copy (official split) beside the repository, where CI has it too.
SHARED_TAR = Path(os.environ.get("SSL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "cifar10-jpeg.tar.gz"
SLICE_TRAIN_PER_CLASS, SLICE_TEST_PER_CLASS = 200, 100


def _in_slice(name: str) -> bool:
    parts = name.split("/")  # cifar10-jpeg/<split>/<class>/<index>.jpg
    if len(parts) != 4 or not parts[3].endswith(".jpg"):
        return False
    keep = SLICE_TRAIN_PER_CLASS if parts[1] == "train" else SLICE_TEST_PER_CLASS
    return int(parts[3][:-4]) < keep


@pytest.fixture(scope="session")
def cifar_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 training and 100 test images per class, extracted from the shared copy into a temp folder."""
    if not SHARED_TAR.is_file():
        pytest.skip(f"the shared CIFAR-10 JPEG copy is not at {SHARED_TAR} (see ../shared/data/README.md)")
    root = tmp_path_factory.mktemp("cifar10-slice")
    with tarfile.open(SHARED_TAR, "r:gz") as tar:
        for member in tar:  # streamed: the members are read in order, once
            if member.isfile() and _in_slice(member.name):
                tar.extract(member, root, filter="data")
    return root / "cifar10-jpeg"


# The shared Tiny ImageNet copy (64-px photographs, 202 classes): the photo models' data.
PHOTOS_TAR = SHARED_TAR.with_name("tiny-imagenet-jpeg.tar.gz")
# Ten classes that look unlike each other (animals, objects), 60 training and 20 test photos each.
PHOTO_SLICE_CLASSES = ("African elephant", "American lobster", "CD player", "Chihuahua", "Egyptian cat", "German shepherd",
                       "abacus", "school bus", "pizza", "seashore")
PHOTO_SLICE_TRAIN, PHOTO_SLICE_TEST = 60, 20


@pytest.fixture(scope="session")
def photo_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten classes of the Tiny ImageNet copy, extracted into a temp folder in the copy's
    train/<class>/, test/<class>/ layout (one streamed pass over the archive, ~10 s)."""
    if not PHOTOS_TAR.is_file():
        pytest.skip(f"the shared Tiny ImageNet copy is not at {PHOTOS_TAR} (see ../shared/data/README.md)")
    root = tmp_path_factory.mktemp("photo-slice")
    kept: dict[tuple[str, str], int] = {}
    with tarfile.open(PHOTOS_TAR, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # tiny-imagenet-jpeg/<split>/<class>/<file>.jpg
            if not member.isfile() or len(parts) != 4 or parts[2] not in PHOTO_SLICE_CLASSES:
                continue
            key = (parts[1], parts[2])
            if kept.get(key, 0) < (PHOTO_SLICE_TRAIN if parts[1] == "train" else PHOTO_SLICE_TEST):
                kept[key] = kept.get(key, 0) + 1
                tar.extract(member, root, filter="data")
    return root / "tiny-imagenet-jpeg"


def write_fake_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10's python layout (cifar-10-batches-py: 5 data batches, test_batch, batches.meta) with
    random pixels, tiny by default; the benchmark's own writer, so both read the same format."""
    from ssl_core.cifar_files import write_fake

    return write_fake(root, per_batch, seed)


def untrained_figures(cfg) -> dict:  # noqa: ANN001 - a TrainConfig
    """The held-out figures of a run's own network before its first step, on the run's own split:
    `train()` seeds torch with cfg.seed and builds `model_for(cfg)`, and so does this. What every
    "it learned" assertion is measured against: digits are easy enough that an untrained encoder's
    5-NN is already ~0.96, so an absolute floor there proves nothing."""
    from ssl_core.config import model_for
    from ssl_core.evaluate import evaluate
    from ssl_core.train import autocast_dtype, prepare_data

    _, parts = prepare_data(cfg)
    torch.manual_seed(cfg.seed)
    amp = autocast_dtype(cfg, torch.device("cpu"))  # the run's own precision (bf16 on CPUs with bf16 units)
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        return evaluate(model_for(cfg), parts.train, parts.test)


def separation(distances: dict) -> float:
    """ROC-AUC of "same class is nearer" read off a learning frame's distance histograms (`edges`,
    `same`, `different` counts): the chance a same-class pair is nearer than a different-class one,
    pairs in one bin counted as ties."""
    same, different = distances["same"], distances["different"]
    farther = [sum(different[i + 1:]) for i in range(len(same))]
    wins = sum(s * (f + 0.5 * d) for s, f, d in zip(same, farther, different))
    return wins / (sum(same) * sum(different))


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function giving a TCP port on 127.0.0.1 that is free now, for launching the app."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Path:
    return write_fake_cifar(tmp_path / "cifar")


@pytest.fixture(scope="session")
def digits():
    from ssl_core.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_split(digits):
    from ssl_core.data import split

    return split(digits, 0.2, 0)


CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_default(task: str) -> str:
    """The model a task's answers come from by default: the photo model once it ships (its weights
    are committed), CIFAR-10's until then (registry.DEFAULT_FAMILIES)."""
    return f"photos-{task}" if (CHECKPOINTS / f"photos-{task}" / "model.safetensors").is_file() else f"cifar10-{task}"


def shipped_names() -> list[str]:
    """Every shipped model, in the registry's order: photo models (those shipped so far), CIFAR-10, digits."""
    return ([f"photos-{t}" for t in TASKS if shipped_default(t).startswith("photos-")]
            + [f"{family}-{t}" for family in ("cifar10", "digits") for t in TASKS])


@pytest.fixture(scope="session")
def shipped_checkpoints() -> Path:
    return CHECKPOINTS
