"""The shipped models measured again from their weights, and the shipped samples checked against the
data they say they hold. A card's numbers are only a claim: here every checkpoint in checkpoints/ is
loaded and evaluated with the project's own protocol (`evaluate.evaluate`) on held-out data, and
each figure on its card must come out again within a stated margin. Untrained weights in any
shipped checkpoint turn these tests red (margins calibrated on both, docs/reliability.md).

Held-out data, per dataset:
- digits: the card's own split, whole (359 test, 1,438 training images): the card is reproduced
  to within numerical noise (FULL_SPLIT_MARGIN).
- CIFAR-10: the shared JPEG copy. All 60,000 images would take minutes per model on 2 cores, so a
  fixed slice: the first 200 test files of each class (2,000 images: the app's shipped sample) and
  the first 1,000 training files of each class (10,000, for the kNN and linear probes).
- photos (Tiny ImageNet, 64 px): the shared copy's test/ split, likewise sliced: about 2,000 test
  photos and 10,000 training photos (about 50 a class), picked by a hash of their file names.
Skipped, with the reason, where the shared copies are absent.

Margins on a slice (the card measured all test images against all training images):
- figures read off the test images alone (rotation accuracy, pair ROC-AUC and accuracy) must come
  within SLICE_TEST_MARGIN of the card: 3 standard errors of a 2,000-image estimate;
- kNN and linear-probe accuracy lose some of their training split on a slice (fewer neighbours, a
  probe fitted on a tenth of the images: 50 photos for each of 202 classes), and an untrained
  encoder loses some too. So the untrained encoder of the same architecture and seed is measured
  on the same slice, and the model must stay above it by at least half of what training added on
  the card (card minus `..._random_init`), and may not exceed the card by more than
  SLICE_TEST_MARGIN. Untrained weights keep none of the gain.
"""

from __future__ import annotations

import json
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

from conftest import SHARED_TAR
from ssl_core.checkpoints import load_checkpoint
from ssl_core.data import ImageSet, load_dataset, split
from ssl_core.evaluate import evaluate
from ssl_core.images import to_model_image
from ssl_core.inference import random_init_model

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints"
CHECKPOINTS = sorted(d.name for d in SHIPPED.iterdir() if (d / "card.json").is_file())
SAMPLES = sorted(p.name for p in (ROOT / "assets").glob("*-sample.safetensors"))
PHOTOS_TAR = SHARED_TAR.with_name("tiny-imagenet-jpeg.tar.gz")

FULL_SPLIT_MARGIN = 0.01  # the same images and code: only numerics differ (another CPU, bf16 vs fp32)
SLICE_TEST_MARGIN = 0.03  # 3 standard errors of a 2,000-image estimate (rotation: 8,000 turns; AUC: 2,000 pairs)
KEPT_GAIN = 0.5  # share of the card's gain over random init a probe must keep on a slice
TRAIN_PROBES = ("knn_accuracy", "linear_probe_accuracy")  # the figures that depend on the training split
CIFAR_TRAIN_PER_CLASS, CIFAR_TEST_PER_CLASS = 1000, 200
PHOTO_TRAIN_EVERY, PHOTO_TEST_EVERY = 10, 5  # one file in 10 (train) and in 5 (test), by name hash


@dataclass
class HeldOut:
    root: Optional[Path]  # the copy's folder (train/<class>/, test/<class>/); None for digits
    train: ImageSet  # what the probes are fitted on
    test: ImageSet  # what every figure is measured on
    full_test: ImageSet  # the whole test split, in the order the training run saw it (sample rows index it)
    whole: bool  # train and test are the card's own splits, whole


def _extract(tar_path: Path, root: Path, keep: Callable[[list[str]], bool]) -> Path:
    """Stream the tarball once, extracting the files `keep` takes (by name parts: copy/split/class/file)."""
    if not tar_path.is_file():
        pytest.skip(f"the shared copy is not at {tar_path} (see ../shared/data/README.md)")
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and keep(parts):
                tar.extract(member, root, filter="data")
    return root / tar_path.name.split(".")[0]


def _test_files(root: Path) -> list[str]:
    """test/<class>/<file> in the order load_folder puts the test split: classes, then files, by name."""
    test = root / "test"
    return [f"test/{c.name}/{f.name}" for c in sorted(d for d in test.iterdir() if d.is_dir())
            for f in sorted(test.joinpath(c.name).iterdir(), key=lambda p: p.name)]


def _held_out(root: Path, dataset: str, size: int, in_slice: Callable[[str], bool]) -> HeldOut:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_DATA_DIR", str(root.parent / "cache"))
        data = load_dataset(dataset, root, max_images=None, image_size=size)
    parts = split(data)  # the copy's own split
    names = _test_files(root)
    assert len(names) == len(parts.test), "the test split is not the test/ folder in name order"
    keep = torch.tensor([i for i, n in enumerate(names) if in_slice(n)])
    return HeldOut(root, parts.train, parts.test.subset(keep), parts.test, whole=False)


@pytest.fixture(scope="module")
def cifar10_copy(tmp_path_factory: pytest.TempPathFactory) -> HeldOut:
    """The CIFAR-10 copy's first 1,000 training files a class and its whole test split."""
    root = _extract(SHARED_TAR, tmp_path_factory.mktemp("cifar10-eval"),
                    lambda p: p[1] == "test" or int(p[3].split(".")[0]) < CIFAR_TRAIN_PER_CLASS)
    return _held_out(root, "cifar10", 32, lambda n: int(n.rsplit("/", 1)[1].split(".")[0]) < CIFAR_TEST_PER_CLASS)


def _hashed(name: str, every: int) -> bool:
    return zlib.crc32(name.encode()) % every == 0


@pytest.fixture(scope="module")
def photos_copy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], HeldOut]:
    """The Tiny ImageNet copy's whole test split and one training photo in ten, at a given size."""
    root = _extract(PHOTOS_TAR, tmp_path_factory.mktemp("photos-eval"),
                    lambda p: p[1] == "test" or _hashed("/".join(p[1:]), PHOTO_TRAIN_EVERY))
    loaded: dict[int, HeldOut] = {}

    def at(size: int) -> HeldOut:
        if size not in loaded:
            loaded[size] = _held_out(root, "folder", size, lambda n: _hashed(n, PHOTO_TEST_EVERY))
        return loaded[size]

    return at


def held_out_for(card: dict, name: str, request: pytest.FixtureRequest) -> HeldOut:
    size = int(card.get("image_size", 32))
    if card["dataset"] == "digits":
        cfg = card["config"]
        assert not cfg.get("max_train_images"), "a digits card fitted on a subsample of its training split"
        parts = split(load_dataset("digits", image_size=size), cfg["test_fraction"], cfg["seed"])
        return HeldOut(None, parts.train, parts.test, parts.test, whole=True)
    if card["dataset"] == "cifar10":
        return request.getfixturevalue("cifar10_copy")
    if name.startswith("photos-") or "tiny" in card.get("dataset_source", "").lower():
        return request.getfixturevalue("photos_copy")(size)
    pytest.fail(f"{name}: no held-out data is known for its dataset {card['dataset']!r}; add it to held_out_for()")


def bounds(key: str, metrics: dict, measured: dict, whole: bool) -> tuple[float, float]:
    """The range a re-measured figure must fall in (module docstring)."""
    claimed = metrics[key]
    if whole:
        return claimed - FULL_SPLIT_MARGIN, claimed + FULL_SPLIT_MARGIN
    if key in TRAIN_PROBES:
        gain = claimed - metrics.get(f"{key}_random_init", claimed)
        return measured[f"{key}_random_init"] + KEPT_GAIN * gain, claimed + SLICE_TEST_MARGIN
    return claimed - SLICE_TEST_MARGIN, claimed + SLICE_TEST_MARGIN


def claimed_figures(metrics: dict) -> list[str]:
    """The card's held-out figures, less the baselines, the threshold (a calibration) and the counts."""
    return [k for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_random_init") and k != "threshold"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_shipped_model_measures_what_its_card_claims(name: str, request: pytest.FixtureRequest) -> None:
    ckpt = load_checkpoint(SHIPPED / name)
    card, metrics = ckpt.card, ckpt.card["metrics"]
    held = held_out_for(card, name, request)
    assert held.test.class_names == card["class_names"], "the held-out labels mean other classes than the card's"
    t = time.perf_counter()
    measured = evaluate(ckpt.model, held.train, held.test, baseline=None if held.whole else random_init_model(ckpt))
    seconds = time.perf_counter() - t
    figures = claimed_figures(metrics)
    assert figures, f"{name}: its card claims nothing to measure"
    rows = [(k, metrics[k], measured.get(k), *bounds(k, metrics, measured, held.whole)) for k in figures]
    print(f"\n{name}: {len(held.test)} test / {len(held.train)} training images, {seconds:.1f} s; " +
          ", ".join(f"{k} {m:.4f} (card {c:.4f}, allowed {lo:.3f}..{hi:.3f})" for k, c, m, lo, hi in rows if m is not None) +
          "".join(f", untrained here {k} {v:.4f}" for k, v in measured.items() if k.endswith("_random_init")))
    if held.whole:
        assert (measured["test_images"], measured["train_images"]) == (metrics["test_images"], metrics["train_images"])
    off = [(k, m, (round(lo, 4), round(hi, 4))) for k, _, m, lo, hi in rows if m is None or not lo <= m <= hi]
    assert not off, f"{name}: measured outside what its card allows: {off}"


@pytest.mark.parametrize("name", SAMPLES)
def test_shipped_sample_holds_exactly_the_test_images_it_says(name: str, request: pytest.FixtureRequest) -> None:
    """assets/*-sample.safetensors stand in for a data set on a machine without it (a fresh Space):
    their images must be the test images they name (files or rows of the test split), bit for bit."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(ROOT / "assets" / name), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(ROOT / "assets" / name))
    images, labels = tensors["images"], tensors["labels"]
    size = images.shape[-1]
    if name.startswith("cifar10-"):
        held = request.getfixturevalue("cifar10_copy")
    elif name.startswith("photos-"):
        held = request.getfixturevalue("photos_copy")(size)
    else:
        pytest.fail(f"{name}: no data copy is known for this sample; add it here")
    test = held.full_test
    class_names = json.loads(meta["class_names"])
    assert class_names == test.class_names and len(images) == len(labels) > 0
    checked = False
    if "files" in meta:
        files = json.loads(meta["files"])
        assert len(files) == len(images) and len(set(files)) == len(files)
        for f, img, label in zip(files, images, labels):
            assert f.startswith("test/") and f.split("/")[1] == class_names[label], f
            assert torch.equal(to_model_image(held.root / f, size=size), img), f
        checked = True
    if "rows" in tensors:
        rows = tensors["rows"]
        assert len(set(rows.tolist())) == len(rows)
        assert torch.equal(test.images[rows], images) and torch.equal(test.labels[rows], labels)
        checked = True
    if "test_images" in meta:
        assert int(meta["test_images"]) == len(test)
    assert checked, f"{name} says neither which files nor which rows it holds"
