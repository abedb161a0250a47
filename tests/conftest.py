"""Shared fixtures: the digits split, a tiny fake CIFAR-10 in the real on-disk layout, trained models."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never touch the network, and two cores are all CI has.
os.environ.setdefault("SSL_DATA_DIR", "/nonexistent-ssl-data")
torch.set_num_threads(min(2, os.cpu_count() or 1))

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10's python layout (cifar-10-batches-py: 5 data batches, test_batch, batches.meta),
    pickled dicts of rows 1024 R | 1024 G | 1024 B, as shared/tools/make_fake_cifar.py writes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"img_{i:05d}.png" for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return root


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


@pytest.fixture(scope="session")
def shipped_checkpoints() -> Path:
    return Path(__file__).resolve().parent.parent / "checkpoints"
