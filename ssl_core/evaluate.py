"""Held-out evaluation: rotation accuracy, pair ROC-AUC + calibrated threshold, kNN accuracy.

Everything here runs on the test split (the threshold is calibrated on training pairs), so the
numbers a user sees were never trained on. kNN and ROC come from scikit-learn.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import KNeighborsClassifier

from .augment import all_rotations, normalize, sample_pairs
from .data import ImageSet
from .models import SSLModel

KNN_K = 5
EVAL_PAIRS = 2000


@torch.no_grad()
def embed(model: SSLModel, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """uint8 images -> embeddings (N, D) float32 on the CPU, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model.embed(normalize(images[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.args.feature_dim)


@torch.no_grad()
def rotation_accuracy(model: SSLModel, images: torch.Tensor, batch_size: int = 512) -> float:
    """Share of (image, rotation) cases where the predicted rotation is right; all four per image."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    for i in range(0, len(images), batch_size):
        rotated, labels = all_rotations(images[i : i + batch_size].to(device))
        pred = model(normalize(rotated)).argmax(1)
        correct += int((pred == labels).sum())
        total += len(labels)
    model.train(was_training)
    return correct / max(1, total)


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
    a, b, same = fixed_pairs(test_labels, seed=4321)
    d = pair_distances(test_emb, a, b)
    s = same.numpy()
    return {
        "pair_auc": float(roc_auc_score(s, -d)),
        "pair_accuracy": float(np.mean((d <= threshold) == (s > 0.5))),
        "threshold": threshold,
    }


def evaluate(model: SSLModel, train: ImageSet, test: ImageSet, baseline: Optional[SSLModel] = None) -> dict:
    """All held-out metrics that apply to this model's task and data (labels needed for kNN/pairs).

    `baseline`, an untrained model of the same architecture, gets the same kNN probe so the effect
    of learning is visible (`knn_accuracy_random_init`).
    """
    metrics: dict = {"test_images": len(test), "train_images": len(train)}
    task = model.args.task
    if task == "rotation":
        metrics["rotation_accuracy"] = rotation_accuracy(model, test.images)
    if not train.labeled:
        metrics["note"] = "unlabeled data: kNN accuracy and pair metrics need class labels"
        return metrics
    train_emb, test_emb = embed(model, train.images), embed(model, test.images)
    metrics["knn_accuracy"] = knn_accuracy(train_emb, train.labels, test_emb, test.labels)
    if task in ("siamese", "simclr"):
        metrics.update(pair_metrics(train_emb, train.labels, test_emb, test.labels))
    if baseline is not None:
        b_train, b_test = embed(baseline, train.images), embed(baseline, test.images)
        metrics["knn_accuracy_random_init"] = knn_accuracy(b_train, train.labels, b_test, test.labels)
        if task in ("siamese", "simclr"):
            metrics["pair_auc_random_init"] = pair_metrics(b_train, train.labels, b_test, test.labels)["pair_auc"]
    return metrics
