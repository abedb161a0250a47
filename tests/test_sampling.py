"""The epoch order: at random (unchanged for runs without per_class), or in runs of one class so a
many-class data set's batches hold same-class positives."""

from __future__ import annotations

import json

import pytest
import torch

from ssl_core.config import TrainConfig
from ssl_core.sampling import epoch_order


def _labels(classes: int, per: int, seed: int = 0) -> torch.Tensor:
    """`per` images of each of `classes` classes, stored in a shuffled order (as a folder's may be)."""
    labels = torch.arange(classes).repeat_interleave(per)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def _with_partner(order: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    """Share of images whose batch holds another image of their class."""
    hits = 0
    for b in order[: len(order) // batch * batch].split(batch):
        counts = torch.bincount(labels[b], minlength=int(labels.max()) + 1)
        hits += int((counts[labels[b]] > 1).sum())
    return hits / (len(order) // batch * batch)


def test_without_per_class_the_order_is_the_plain_random_permutation() -> None:
    # Runs trained before per_class existed must resume and repeat with the same order.
    labels = _labels(5, 7)
    for per_class, given in ((0, labels), (4, None), (0, None)):
        got = epoch_order(len(labels), torch.Generator().manual_seed(3), given, per_class)
        assert torch.equal(got, torch.randperm(len(labels), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("per_class", [1, 3, 4, 7])
def test_every_image_once_and_in_runs_of_one_class(per_class: int) -> None:
    labels = _labels(classes=13, per=10)  # 10 a class: runs of 3, 4 or 7 leave a shorter last run
    order = epoch_order(len(labels), torch.Generator().manual_seed(0), labels, per_class)
    assert sorted(order.tolist()) == list(range(len(labels)))
    # Cut where the class changes: each class comes in at most ceil(10 / per_class) pieces (two of its
    # runs may meet), where a random order scatters it in about 10.
    changes = torch.nonzero(labels[order][1:] != labels[order][:-1]).flatten() + 1
    starts = torch.cat([torch.tensor([0]), changes])
    pieces = torch.bincount(labels[order][starts], minlength=13)
    assert int(pieces.max()) <= -(-10 // per_class)
    assert int(pieces.sum()) >= 13 * (-(-10 // per_class)) * 0.7  # runs rarely meet


def test_runs_of_one_class_give_a_many_class_batch_its_positives() -> None:
    # Tiny ImageNet's shape: 202 classes, batches of 256. At random about 70% of images have a
    # same-class partner in their batch; in runs of 4, all but the rare cut runs do.
    labels = _labels(classes=202, per=60)
    random = _with_partner(epoch_order(len(labels), torch.Generator().manual_seed(1), labels, 0), labels, 256)
    grouped = _with_partner(epoch_order(len(labels), torch.Generator().manual_seed(1), labels, 4), labels, 256)
    assert 0.6 < random < 0.8
    assert grouped > 0.98


def test_the_order_follows_the_generator() -> None:
    labels = _labels(20, 9)
    a = epoch_order(len(labels), torch.Generator().manual_seed(5), labels, 3)
    b = epoch_order(len(labels), torch.Generator().manual_seed(5), labels, 3)
    c = epoch_order(len(labels), torch.Generator().manual_seed(6), labels, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_per_class_is_checked_where_it_is_set() -> None:
    assert TrainConfig(task="siamese", dataset="cifar10").per_class == 0  # the recipes leave it off
    assert TrainConfig(task="siamese", dataset="cifar10", per_class=4).per_class == 4
    for bad in (-1, 2.5, True, 10_000):
        with pytest.raises(ValueError, match="per_class"):
            TrainConfig(task="siamese", dataset="cifar10", per_class=bad)
    with pytest.raises(ValueError, match="only the siamese task"):
        TrainConfig(task="simclr", dataset="cifar10", per_class=4)


def test_the_engine_orders_siamese_epochs_by_class_and_the_card_says_so(monkeypatch, tmp_path) -> None:
    import ssl_core.train as engine
    from ssl_core.runs import run_and_save

    seen = []

    def spy(n, gen, labels=None, per_class=0):  # noqa: ANN001, ANN202
        order = epoch_order(n, gen, labels, per_class)
        seen.append(labels is not None and per_class == 3 and bool((labels[order[:3]] == labels[order[0]]).all()))
        return order

    monkeypatch.setattr(engine, "epoch_order", spy)
    cfg = TrainConfig(task="siamese", dataset="digits", epochs=2, batch_size=60, per_class=3, max_train_images=300, device="cpu")
    result, path = run_and_save(cfg, tmp_path / "run")
    assert seen == [True, True]  # both epochs began with a run of one class
    card = json.loads((path / "card.json").read_text())
    assert card["config"]["per_class"] == 3 and result.metrics["pair_auc"] > 0.5
