"""CIFAR-10 for real: a slice of the shared JPEG copy (official split) through the loader and the engine.

Skipped, with the reason, where `../shared/data` is not beside the repository.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from ssl_core.data import CIFAR10_CLASSES, load_cifar10, load_dataset, split
from ssl_core.images import to_model_image
from ssl_core.train import TrainConfig, train

from conftest import SLICE_TEST_PER_CLASS as TEST_PER_CLASS
from conftest import untrained_figures


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_jpeg_copy_loads_with_the_official_split(cifar_slice: Path, cache_dir: Path) -> None:
    data = load_cifar10(cifar_slice)
    assert len(data) == 3000 and data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, 32, 32)
    assert data.class_names == CIFAR10_CLASSES and data.name == "cifar10"
    assert data.source == "CIFAR-10 (JPEG copy)"
    parts = split(data, test_fraction=0.5, seed=3)  # the set's own split wins over any fraction or seed
    assert len(parts.train) == 2000 and len(parts.test) == 1000
    assert torch.bincount(parts.test.labels).tolist() == [TEST_PER_CLASS] * 10
    # The test split holds exactly the test/ files, decoded as any upload would be.
    first_test_cat = to_model_image(cifar_slice / "test" / "cat" / "0000.jpg")
    assert any(torch.equal(first_test_cat, img) for img in parts.test.images[parts.test.labels == 3])
    assert not any(torch.equal(first_test_cat, img) for img in parts.train.images[parts.train.labels == 3])


def test_jpeg_copy_is_decoded_once_then_read_from_the_cache(cifar_slice: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("cifar10", cifar_slice)
    assert len(list((cache_dir / "tensors").glob("*.safetensors"))) == 1
    monkeypatch.setattr("ssl_core.data.to_model_image", lambda f: pytest.fail("decoded again instead of cached"))
    again = load_dataset("cifar10", cifar_slice)
    assert torch.equal(again.images, first.images) and torch.equal(again.test_mask, first.test_mask)
    assert again.source == "CIFAR-10 (JPEG copy)"


def test_folder_without_cifar_classes_is_not_taken_for_cifar(tmp_path: Path, cache_dir: Path) -> None:
    from PIL import Image

    for part in ("train", "test"):
        (tmp_path / part / "apples").mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(tmp_path / part / "apples" / "0.png")
    with pytest.raises(Exception, match="ten class folders"):
        load_cifar10(tmp_path)


@pytest.mark.slow
def test_short_rotation_run_learns_on_cifar(cifar_slice: Path, cache_dir: Path) -> None:
    """The CIFAR-10 recipe (convnet, crops, flips, all four turns) on 2,000 training images, 3 epochs."""
    result = train(TrainConfig(task="rotation", dataset="cifar10", data_dir=str(cifar_slice), epochs=3))
    m = result.metrics
    assert m["test_images"] == 1000 and m["train_images"] == 2000
    assert result.config.arch == "convnet" and result.config.flip and result.config.max_shift > 0
    # Measured ~0.60 here; the same network untrained answers 0.25. The margin leaves room for other CPUs and seeds.
    assert m["rotation_accuracy"] >= untrained_figures(result.config)["rotation_accuracy"] + 0.2, m
    assert {"linear_probe_accuracy", "linear_probe_accuracy_random_init", "knn_accuracy", "knn_accuracy_random_init"} <= m.keys()


@pytest.mark.slow
def test_short_siamese_run_separates_classes_better_than_random_init(cifar_slice: Path, cache_dir: Path) -> None:
    result = train(TrainConfig(task="siamese", dataset="cifar10", data_dir=str(cifar_slice), epochs=4))
    m = result.metrics
    assert m["pair_auc"] >= m["pair_auc_random_init"] + 0.03, m
    assert 0 <= m["pair_accuracy"] <= 1 and m["threshold"] > 0


SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"


# Issue 17's floors, on all 10,000 official test images, for the models retrained with its recipes.
FLOORS = {
    "rotation": {"rotation_accuracy": 0.87, "linear_probe_accuracy": 0.62},
    "siamese": {"pair_auc": 0.92, "knn_accuracy": 0.72},
    "simclr": {"knn_accuracy": 0.62, "linear_probe_accuracy": 0.68},
}
# The encoder width each retrain used: rotation needed the capacity of width 48 (width 32 stopped at
# 0.864 after 146 epochs, short of 0.87; width 48 reached 0.877 in 100).
WIDTHS = {"rotation": 48, "siamese": 32, "simclr": 32}


@pytest.mark.parametrize("task", ["rotation", "siamese", "simclr"])
def test_shipped_cifar10_cards_meet_their_floors(task: str) -> None:
    """The shipped models' own cards, measured on all 10,000 official test images when they were trained."""
    import json

    from ssl_core import frames

    folder = SHIPPED / f"cifar10-{task}"
    card = json.loads((folder / "card.json").read_text())
    m = card["metrics"]
    assert card["dataset"] == "cifar10" and card["dataset_source"] == "CIFAR-10 (JPEG copy)"
    assert m["test_images"] == 10_000 and m["train_images"] == 50_000 and card["metrics_split"] == "test"
    assert card["arch"] == "convnet" and card["config"]["epochs"] == len(card["history"])
    assert "linear_probe_accuracy" in card["evaluation"] and card["config"]["data_dir"] is None
    for key in ("linear_probe_accuracy", "knn_accuracy"):  # the untrained encoder's numbers are beside them
        assert m[key] > m[f"{key}_random_init"], key
    for key, floor in FLOORS[task].items():
        assert m[key] >= floor, (key, m[key], floor)
    # Trained for a wall-clock budget, with the machine(s) and precision it ran on, and its frames.
    assert card["config"]["minutes"] > 0 and card["config"]["width"] == WIDTHS[task]
    machine = card["machine"]
    assert machine["cpu"] and machine["precision"] in ("bf16", "fp32")
    assert all(s["cpu"] and s["from_epoch"] >= 1 for s in machine.get("sessions", []))
    shots = frames.load(folder)
    assert shots[0].epoch == 0 and math.ceil(shots[-1].epoch) == card["config"]["epochs"]  # a budget may end mid-epoch
    assert len(shots) >= card["config"]["epochs"] + 1 and len(shots[0].xy) == 1000
    assert not (folder / "resume").exists()  # a finished run leaves no resumable state behind


def test_the_jpeg_copys_split_is_its_test_folder_and_shares_no_image(cifar_slice: Path, cache_dir: Path) -> None:
    """Train and test are exactly the train/ and test/ files, by content, and no image is in both
    (the copy has no duplicates across its split: checked on all 60,000)."""
    from ssl_core.images import to_model_images

    from tests.test_data import assert_disjoint

    parts = split(load_dataset("cifar10", cifar_slice))
    assert_disjoint(parts)
    for side, images in (("train", parts.train.images), ("test", parts.test.images)):
        files = sorted(str(f) for f in (cifar_slice / side).rglob("*.jpg"))
        decoded = {img.numpy().tobytes() for img in to_model_images(files)}
        assert decoded == {img.numpy().tobytes() for img in images} and len(decoded) == len(images) == len(files), side
