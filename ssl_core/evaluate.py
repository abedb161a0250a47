"""Held-out evaluation: rotation accuracy, pair ROC-AUC + calibrated threshold, kNN accuracy, and
a linear probe, as self-supervised learning is usually judged.

Everything here is measured on the test split (the threshold and the probes are fitted on the
training split), so the numbers a user sees were never trained on. kNN and ROC come from
scikit-learn; the linear probe is a softmax regression fitted with L-BFGS in torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import KNeighborsClassifier

from . import TASKS
from .augment import all_rotations, normalize, sample_pairs
from .data import ImageSet
from .models import SSLModel

KNN_K = 5
# Pairs for a pair ROC-AUC and threshold. 2,000 pairs left a weak embedding on 202 classes a spread
# of 0.015 between draws (photos-simclr: 0.647..0.719 over 10 seeds); 20,000 bring it to 0.004 for
# a few milliseconds more (docs/reliability.md, "pair metrics").
EVAL_PAIRS = 20_000
PROBE_WEIGHT_DECAY = 1e-4  # L2 on the probe's weights: keeps L-BFGS from chasing separable data
PROBE_MAX_ITER = 300
@dataclass(frozen=True)
class Metric:
    """How a held-out metric is named and shown, everywhere: CLI summary, app tables, plots."""

    key: str  # the card's metrics key; its baseline is f"{key}_random_init"
    label: str  # what a user reads
    percent: bool  # shown as 97.4% (else as 0.998)
    tasks: tuple[str, ...]  # the tasks whose cards carry it


METRICS = (
    Metric("rotation_accuracy", "rotation accuracy (each test image in all 4 turns)", True, ("rotation",)),
    Metric("rotation_accuracy_vote", "rotation accuracy of the app's answer (vote over the 4 turns)", True, ("rotation",)),
    Metric("linear_probe_accuracy", "linear probe accuracy (frozen encoder features)", True, TASKS),
    Metric("knn_accuracy", "5-NN accuracy (classes of the 5 nearest neighbours in the embedding)", True, TASKS),
    Metric("pair_auc", "pair ROC-AUC (distance separates same/different class)", False, ("siamese", "simclr")),
    Metric("pair_accuracy", "pair accuracy at the calibrated threshold", True, ("siamese", "simclr")),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


def format_metric(key: str, value: float) -> str:
    m = METRIC_BY_KEY.get(key)
    return f"{value:.1%}" if m is None or m.percent else f"{value:.3f}"


# What each metric means, written on every card so a number is never read without its protocol.
PROTOCOL = {
    "split": "every metric is measured on the test split; probes and the threshold are fitted on the training split",
    "knn_accuracy": f"{KNN_K}-nearest-neighbour (Euclidean) classification of the task's embedding (model.embed)",
    "linear_probe_accuracy": "softmax regression (L-BFGS, L2 1e-4) on standardised frozen encoder features "
                             "(the encoder output before any task head), fitted on all training images",
    "rotation_accuracy": "every test image in all four quarter-turns; share of turns predicted right",
    "rotation_accuracy_vote": "the same, each answer a vote: the four further turns of the picture asked, each "
                              "view's probabilities turned back and averaged (what the app answers)",
    "pair_auc": f"ROC-AUC of embedding distance for same vs different class on {EVAL_PAIRS} balanced test pairs "
                "(a same-class partner is another image, never the image itself)",
    "random_init": "the same probes on the same architecture before training (same seed): the baseline",
}


@torch.no_grad()
def embed(model: SSLModel, images: torch.Tensor, batch_size: int = 1024, features: bool = False) -> torch.Tensor:
    """uint8 images -> embeddings (N, D) float32 on the CPU, in eval mode.

    `features=True` gives the encoder's output instead of the task's embedding: what a linear
    probe reads, the same vector for every task.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    fn = model.encoder if features else model.embed
    out = [fn(normalize(images[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.args.feature_dim)


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, n_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A linear softmax classifier fitted on frozen training features; returns features -> logits.

    Features are standardised with the training split's mean and spread, so one weight decay suits
    every encoder. Full-batch L-BFGS is deterministic and converges in a few seconds on 50,000 x 256
    to the one minimum of the regularised loss (tests/test_evaluate.py checks it against scikit-learn's).
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs = (train_x - mean) / std
    linear = torch.nn.Linear(xs.shape[1], n_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=PROBE_MAX_ITER, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(xs), train_y) + PROBE_WEIGHT_DECAY * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    # fp32 even inside the engine's bf16 autocast (which speeds up the encoders' forward passes):
    # L-BFGS's line search needs the precision.
    with torch.enable_grad(), torch.autocast(xs.device.type, enabled=False):
        opt.step(closure)
    linear.requires_grad_(False)
    return lambda x: linear((x - mean) / std)


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Accuracy on the test features of `fit_linear_probe` fitted on the training features."""
    logits = fit_linear_probe(train_x, train_y, int(max(train_y.max(), test_y.max())) + 1)
    with torch.no_grad():
        return float((logits(test_x).argmax(1) == test_y).float().mean())


@torch.no_grad()
def vote_over_turns(probs: torch.Tensor) -> torch.Tensor:
    """(B,4,4) probabilities of the four views of each picture, view j the picture turned j more
    quarter-turns -> (B,4) voted probabilities of the picture's own turn. View j says the picture
    is at turn k when it sees turn k + j, so each view's row is turned back by j and the four
    averaged: a model that errs on one view is outvoted by the three others."""
    back = torch.stack([torch.roll(probs[:, j], -j, dims=-1) for j in range(4)], dim=1)
    return back.mean(dim=1)


def rotation_accuracies(model: SSLModel, images: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """(single views, votes): share of (image, turn) cases answered right from that view alone, and
    by the vote over its four turns (`vote_over_turns`); all four turns of every image."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = voted = total = 0
    for i in range(0, len(images), batch_size):
        rotated, labels = all_rotations(images[i : i + batch_size].to(device))
        probs = torch.softmax(model(normalize(rotated)).float(), dim=1)
        correct += int((probs.argmax(1) == labels).sum())
        # probs[m*b + i] is picture i turned m times. Asked at turn m, the app's views are turns
        # m, m+1, m+2, m+3. (The vote is the same for every m up to a turn, but ties break by index,
        # which is not turn-invariant: each turn is counted as the app would answer it.)
        per_image = probs.view(4, -1, 4).transpose(0, 1)  # (b, turn, 4)
        for m in range(4):
            voted += int((vote_over_turns(torch.roll(per_image, -m, dims=1)).argmax(1) == m).sum())
        total += len(labels)
    model.train(was_training)
    return correct / max(1, total), voted / max(1, total)


def rotation_accuracy(model: SSLModel, images: torch.Tensor, batch_size: int = 512) -> float:
    """Share of (image, rotation) cases where the predicted rotation is right; all four per image."""
    return rotation_accuracies(model, images, batch_size)[0]


def knn_accuracy(train_emb: torch.Tensor, train_labels: torch.Tensor, test_emb: torch.Tensor, test_labels: torch.Tensor, k: int = KNN_K) -> float:
    """k-nearest-neighbour classification of test embeddings by training embeddings."""
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_emb)))
    knn.fit(train_emb.numpy(), train_labels.numpy())
    return float(knn.score(test_emb.numpy(), test_labels.numpy()))


def fixed_pairs(labels: torch.Tensor, n: int = EVAL_PAIRS, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same balanced (half same-class) pairs every time for a given label set and seed."""
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.randint(0, len(labels), (n,), generator=gen)
    partners, same = sample_pairs(labels, anchors, generator=gen)
    return anchors, partners, same


def pair_distances(emb: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(emb[a] - emb[b], dim=1).numpy()


def calibrate_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The distance below which a pair is called "same class" that is most accurate on these pairs."""
    fpr, tpr, thresholds = roc_curve(same, -distances, drop_intermediate=False)
    pos = same.sum()
    neg = len(same) - pos
    accuracy = (tpr * pos + (1 - fpr) * neg) / len(same)
    best = int(np.argmax(accuracy[1:])) + 1  # thresholds[0] is +inf: "call nothing same"
    accepted = -thresholds[best]  # the largest distance still called "same" at the best cut
    if best + 1 < len(thresholds):
        # Midway to the next distance, not on the last accepted pair: unseen pairs near the
        # boundary are split evenly instead of all the slightly-farther ones called "different".
        return float((accepted - thresholds[best + 1]) / 2)
    return float(accepted)


def pair_metrics(train_emb: torch.Tensor, train_labels: torch.Tensor, test_emb: torch.Tensor, test_labels: torch.Tensor) -> dict:
    """Pair ROC-AUC and accuracy on held-out pairs, at a threshold calibrated on training pairs."""
    a, b, same = fixed_pairs(train_labels)
    threshold = calibrate_threshold(pair_distances(train_emb, a, b), same.numpy())
    d, s = _held_out_pairs(test_emb, test_labels, seed=4321)
    return {
        "pair_auc": float(roc_auc_score(s, -d)),
        "pair_accuracy": float(np.mean((d <= threshold) == (s > 0.5))),
        "threshold": threshold,
    }


def _held_out_pairs(emb: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances of balanced fixed pairs of held-out images, and whether each pair shares a class."""
    a, b, same = fixed_pairs(labels, seed=seed)
    return pair_distances(emb, a, b), same.numpy()


QUICK_PROBE_IMAGES = 2000  # per-epoch curves use at most this many images; the final evaluation uses all


def quick_probe(model: SSLModel, train: ImageSet, test: ImageSet, seed: int) -> dict:
    """A quick held-out number for the live curve (and the time-to-accuracy benchmark), on at most
    QUICK_PROBE_IMAGES drawn images: rotation accuracy, or kNN accuracy and pair ROC-AUC of the embedding."""
    test, train = _at_most(test, seed), _at_most(train, seed)
    if model.args.task == "rotation":
        return {"rotation_accuracy": rotation_accuracy(model, test.images)}
    if not train.labeled:
        return {}
    test_emb = embed(model, test.images)
    out = {"knn_accuracy": knn_accuracy(embed(model, train.images), train.labels, test_emb, test.labels)}
    if model.args.task in ("siamese", "simclr"):
        d, same = _held_out_pairs(test_emb, test.labels, seed)
        out["pair_auc"] = float(roc_auc_score(same, -d))
    return out


def _at_most(images: ImageSet, seed: int, n: int = QUICK_PROBE_IMAGES) -> ImageSet:
    if len(images) <= n:
        return images
    return images.subset(torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n])


def evaluate(model: SSLModel, train: ImageSet, test: ImageSet, baseline: Optional[SSLModel] = None) -> dict:
    """All held-out metrics that apply to this model's task and data (labels needed for the probes).

    `baseline`, an untrained model of the same architecture, gets the same kNN and linear probes so
    the effect of learning is visible (`..._random_init`).
    """
    metrics: dict = {"test_images": len(test), "train_images": len(train)}
    task = model.args.task
    if task == "rotation":
        metrics["rotation_accuracy"], metrics["rotation_accuracy_vote"] = rotation_accuracies(model, test.images)
    if not train.labeled:
        metrics["note"] = "unlabeled data: kNN accuracy and pair metrics need class labels"
        return metrics
    metrics.update(_probes(model, train, test, task))
    if baseline is not None:
        for key, value in _probes(baseline, train, test, task).items():
            if key in ("knn_accuracy", "linear_probe_accuracy", "pair_auc"):
                metrics[f"{key}_random_init"] = value
    return metrics


def _probes(model: SSLModel, train: ImageSet, test: ImageSet, task: str) -> dict:
    train_f, test_f = embed(model, train.images, features=True), embed(model, test.images, features=True)
    train_emb, test_emb = _embedding_of(model, train_f), _embedding_of(model, test_f)
    out = {"knn_accuracy": knn_accuracy(train_emb, train.labels, test_emb, test.labels)}
    if task in ("siamese", "simclr"):
        out.update(pair_metrics(train_emb, train.labels, test_emb, test.labels))
    out["linear_probe_accuracy"] = linear_probe_accuracy(train_f, train.labels, test_f, test.labels)
    return out


@torch.no_grad()
def _embedding_of(model: SSLModel, features: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return model.embed_features(features.to(device)).float().cpu()
