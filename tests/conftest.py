"""Shared fixtures: the digits split, a tiny fake CIFAR-10 in the real on-disk layout, trained models."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

import pytest
import torch

# Tests never touch the network, and two cores are all CI has.
os.environ.setdefault("SSL_DATA_DIR", "/nonexistent-ssl-data")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def write_fake_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10's python layout (cifar-10-batches-py: 5 data batches, test_batch, batches.meta) with
    random pixels, tiny by default; the benchmark's own writer, so both read the same format."""
    from ssl_core.cifar_files import write_fake

    return write_fake(root, per_batch, seed)


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


@pytest.fixture(scope="session")
def shipped_checkpoints() -> Path:
    return Path(__file__).resolve().parent.parent / "checkpoints"
