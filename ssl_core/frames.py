"""Learning frames: a fixed held-out sample as the model sees it, recorded while it trains.

A frame is taken before the first step (the untrained encoder: where the story starts), at the end
of every epoch and, in runs of fewer than `SHORT_RUN_EPOCHS` epochs, `FRAMES_PER_SHORT_EPOCH` times
within each epoch. Each frame holds: epoch (fractional within an epoch), step, the leave-one-out
5-NN accuracy of the sample, its 2-D positions, what the frame cost, and per task a 4x4 table of
turns (rotation) or the held-out same/different-class pair distances with the threshold (siamese,
simclr). The sample and its order are fixed, so point i is the same image in every frame.

Positions move smoothly: either PCA aligned to the previous frame (orthogonal Procrustes: a
rotation or reflection, never a new random picture) or openTSNE started from the previous frame's
positions for `TSNE_STEPS` iterations. Which one is picked per run from what it costs against the
epoch's measured pace (`BUDGET`), and recorded; docs/benchmarks.md has the numbers. Positions are
rescaled into [-1, 1] so a plot's axes stay put.

A finished run keeps its frames in `frames.json` beside its weights (JSON, positions as integers).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from . import dataset_title
from .augment import all_rotations, normalize
from .data import Split
from .errors import UserError
from .evaluate import KNN_K, calibrate_threshold, embed, fixed_pairs, pair_distances
from .models import SSLModel
from .projection import affinities, pca_basis

FRAMES_FILE = "frames.json"
FORMAT = 1
SAMPLE_PER_CLASS = 100  # held-out images per class in the sample
# A map shows at most this many classes: ten colours a person can tell apart. A set with more (Tiny
# ImageNet's 202) shows a fixed subset, chosen to look unlike each other where the names are known.
SHOWN_CLASSES = 10
DISTINCT_CLASSES = ("school bus", "pizza", "seashore", "monarch", "African elephant", "teapot", "jellyfish", "lemon",
                    "sports car", "king penguin")
SAMPLE_SIZE = 1000  # at most, labelled or not
SAMPLE_SEED = 2024  # which images; fixed so every run of a data set shows the same ones
BUDGET = 0.05  # a frame may cost at most this share of an epoch's training time
SHORT_RUN_EPOCHS = 5  # runs with fewer epochs get frames within each epoch too
FRAMES_PER_SHORT_EPOCH = 3  # ... this many per epoch, the last at its end
TSNE_INIT_STD = 1.0  # spread of the PCA start of the first t-SNE layout
TSNE_STEPS = 100  # warm-started t-SNE iterations per frame: enough to follow a moving embedding
ROTATION_IMAGES = 100  # sample images shown in all four turns for the confusion table
HIST_PAIRS = 2000  # fixed held-out pairs of the sample for the distance histograms
HIST_BINS = 30
THRESHOLD_IMAGES = 100  # training images whose fixed pairs calibrate each frame's threshold
QUANT = 1000  # positions are stored as integers in [-QUANT, QUANT]
KNN_ABOUT = f"leave-one-out {KNN_K}-NN (Euclidean) of the task's embedding within the held-out sample"
MAX_FILE_BYTES = 20 * 1024 * 1024  # a frames.json larger than this is not one of ours


class FramesError(UserError, ValueError):
    """A frames file that cannot be read; the message names it and says what is wrong."""


@dataclass(frozen=True)
class Sample:
    """The fixed held-out images every frame of a run shows (shared, never changed)."""

    task: str
    rows: np.ndarray  # (N,) rows of the test split
    labels: np.ndarray  # (N,) class index, -1 when the set is unlabeled
    class_names: tuple[str, ...]
    dataset: str
    images: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)  # uint8, in memory only

    @property
    def about(self) -> str:
        per = f", up to {SAMPLE_PER_CLASS} per class" if (self.labels >= 0).any() else ""
        if len(self.class_names) > SHOWN_CLASSES:
            per += f" of {SHOWN_CLASSES} of its {len(self.class_names)} classes, chosen to look unlike each other"
        return f"held-out sample of {len(self.rows):,} {dataset_title(self.dataset)} test images{per}"

    def __deepcopy__(self, memo: dict) -> "Sample":
        return self  # immutable: snapshots share it


@dataclass(frozen=True)
class Frame:
    epoch: float  # 0 = untrained; 1.5 = half-way through the second epoch
    step: int
    knn_accuracy: Optional[float]  # None for unlabeled sets
    xy: np.ndarray  # (N, 2) float32 in [-1, 1], multiples of 1/QUANT
    seconds: float  # what recording this frame cost
    elapsed: float  # training seconds when it was taken
    method: str  # "pca" (aligned) or "tsne" (warm-started)
    sample: Sample
    confusion: Optional[list] = None  # rotation: counts[true turn][predicted turn]
    distances: Optional[dict] = None  # siamese/simclr: edges, same, different (counts), threshold

    def __deepcopy__(self, memo: dict) -> "Frame":
        return self  # immutable: a job snapshot copies the list, not 1,000 points per frame

    def to_dict(self) -> dict:
        """The API's shape: points are [x, y, class index], image i of the sample at row i."""
        q = np.rint(self.xy * QUANT).astype(int)
        out = {"epoch": self.epoch, "step": self.step, "knn_accuracy": self.knn_accuracy,
               "points": [[int(x) / QUANT, int(y) / QUANT, int(c)] for (x, y), c in zip(q, self.sample.labels)],
               "seconds": self.seconds, "elapsed": self.elapsed, "method": self.method}
        if self.confusion is not None:
            out["confusion"] = self.confusion
        if self.distances is not None:
            out["distances"] = self.distances
        return out


def shown_classes(class_names: Sequence[str]) -> list[int]:
    """The class indices a map shows: all of them up to SHOWN_CLASSES, else DISTINCT_CLASSES where
    the set has them, filled up with classes evenly spread over the rest. Fixed for a set."""
    if len(class_names) <= SHOWN_CLASSES:
        return list(range(len(class_names)))
    chosen = [class_names.index(c) for c in DISTINCT_CLASSES if c in class_names][:SHOWN_CLASSES]
    rest = [i for i in range(len(class_names)) if i not in chosen]
    step = len(rest) / max(1, SHOWN_CLASSES - len(chosen))
    return sorted(chosen + [rest[int(j * step)] for j in range(SHOWN_CLASSES - len(chosen))])


def sample_rows(labels: Optional[torch.Tensor], n: int, seed: int = SAMPLE_SEED,
                class_names: Sequence[str] = ()) -> torch.Tensor:
    """Rows of a fixed sample: up to SAMPLE_PER_CLASS per class (SAMPLE_SIZE in all) of the
    `shown_classes`, or SAMPLE_SIZE at random when unlabeled; fewer when the split is smaller. Sorted."""
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        return torch.randperm(n, generator=gen)[:SAMPLE_SIZE].sort().values
    present = torch.unique(labels)
    if len(class_names) > SHOWN_CLASSES:
        present = present[torch.isin(present, torch.tensor(shown_classes(class_names)))]
    per = max(1, min(SAMPLE_PER_CLASS, SAMPLE_SIZE // max(1, len(present))))
    rows = [g[torch.randperm(len(g), generator=gen)[:per]] for g in
            (torch.nonzero(labels == c).flatten() for c in present)]
    return torch.cat(rows).sort().values


def leave_one_out_knn(emb: torch.Tensor, labels: torch.Tensor, k: int = KNN_K) -> float:
    """Each sample image classified by its k nearest others (ties to the lower class index)."""
    d = torch.cdist(emb, emb)
    d.fill_diagonal_(float("inf"))
    near = d.topk(min(k, len(emb) - 1), largest=False).indices
    votes = torch.nn.functional.one_hot(labels[near], int(labels.max()) + 1).sum(1)
    return float((votes.argmax(1) == labels).float().mean())


def to_box(xy: np.ndarray) -> np.ndarray:
    """Centred and scaled (one scale for both axes) so the middle 99% of each axis lies within
    [-1, 1]; the 0.5% beyond either end are clipped to the edge. Every frame fills the same box,
    so the axes never jump. Centred on the middle of that range, not the median: an embedding
    lopsided to one side would otherwise leave half the box empty and pile its long tail onto
    the opposite edge. Quantised like the file."""
    lo, hi = np.percentile(xy, [0.5, 99.5], axis=0)
    scale = float(np.max(hi - lo)) / 2 or 1.0
    return (np.rint(np.clip((xy - (lo + hi) / 2) / scale, -1, 1) * QUANT) / QUANT).astype(np.float32)


def aligned_pca(emb: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
    """The first two principal components, turned (or mirrored) to best match `previous`."""
    center, components = pca_basis(emb, 2)
    xy = (emb - center) @ components.T
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((len(xy), 2 - xy.shape[1]), dtype=xy.dtype)])
    if previous is not None:
        u, _, vt = np.linalg.svd(xy.T @ previous)  # orthogonal Procrustes
        xy = xy @ (u @ vt)
    return xy


def warm_tsne(emb: np.ndarray, start: np.ndarray) -> np.ndarray:
    """TSNE_STEPS t-SNE iterations on this frame's neighbours, from the previous positions."""
    from openTSNE import TSNEEmbedding

    perplexity = min(30.0, (len(emb) - 1) / 3)
    e = TSNEEmbedding(start.astype(np.float64), affinities(emb.astype(np.float32), perplexity), n_jobs=1, random_state=0)
    return np.asarray(e.optimize(n_iter=TSNE_STEPS, exaggeration=None), dtype=np.float64)


class Recorder:
    """Takes a run's frames. Built once from the held-out split; `due(step)` says when, `take`
    records one. Only the run's rank 0 records (ssl_core/train.py)."""

    def __init__(self, task: str, parts: Split, steps_per_epoch: int, device: torch.device,
                 seed: int = 0, amp: Optional[torch.dtype] = None) -> None:
        test, train = parts.test, parts.train
        self.device, self.amp = device, amp  # frames run at the training step's precision: bf16 halves their cost
        rows = sample_rows(test.labels, len(test), class_names=test.class_names)
        labels = test.labels[rows] if test.labels is not None else None
        self.sample = Sample(task, rows.numpy(), (labels if labels is not None else torch.full((len(rows),), -1)).numpy(),
                             tuple(test.class_names), test.name, test.images[rows])
        self.images, self.labels = test.images[rows].to(device), labels
        self.steps_per_epoch = steps_per_epoch
        # Steps into an epoch where a short run takes its within-epoch frames (the epoch's end is the engine's call).
        self.within = {max(1, round(steps_per_epoch * j / FRAMES_PER_SHORT_EPOCH)) for j in range(1, FRAMES_PER_SHORT_EPOCH)}
        self.turns = self.images[:: max(1, len(rows) // ROTATION_IMAGES)] if task == "rotation" else None
        self.pairs = None
        if task != "rotation" and labels is not None and train.labeled and len(torch.unique(labels)) > 1:
            self.pairs = fixed_pairs(labels, HIST_PAIRS, seed=4321)
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:THRESHOLD_IMAGES]
            self.calibration = train.images[pick].to(device), fixed_pairs(train.labels[pick], HIST_PAIRS // 2)
        self.method = "pca"  # until the first trained frame decides (see _choose)
        self.frames: list[Frame] = []
        self._tsne_start: Optional[np.ndarray] = None  # t-SNE's own (unboxed) positions of the last frame
        self._tsne_trial = 0.0  # what a t-SNE layout cost on the untrained frame

    def due(self, step: int, epochs: int) -> bool:
        """Whether a frame is due at `step` of a run planned for `epochs` (a minutes budget re-plans):
        before the first step, and within the epochs of a run shorter than SHORT_RUN_EPOCHS."""
        if self.frames and self.frames[-1].step == step:
            return False
        return step == 0 or (epochs < SHORT_RUN_EPOCHS and step % self.steps_per_epoch in self.within)

    def restore(self, text: str) -> None:
        """Continue a resumed run's frames (`to_json` of them, from its resume state)."""
        if text:
            self.frames = from_json(text, "the resume state's frames")
            self.method = self.frames[-1].method
            self._tsne_start = self.frames[-1].xy.astype(np.float64) * TSNE_INIT_STD / (np.std(self.frames[-1].xy[:, 0]) or 1.0)

    @torch.no_grad()
    def take(self, model: SSLModel, step: int, elapsed: float) -> Frame:
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            emb = embed(model, self.images)
            extra = {"confusion": self._confusion(model)} if self.turns is not None else {}
            if self.pairs is not None:
                extra["distances"] = self._distances(model, emb)
        knn = None if self.labels is None else round(leave_one_out_knn(emb, self.labels), 4)
        fixed = time.perf_counter() - t0
        # One BLAS thread: on a busy 2-core machine OpenBLAS's spinning threads turn an 8 ms PCA into 2 s.
        with threadpool_limits(1, user_api="blas"):
            xy = self._layout(emb.numpy().astype(np.float64), fixed, step, elapsed)
        seconds = round(time.perf_counter() - t0, 3)
        frame = Frame(self._epoch(step), step, knn, to_box(xy), seconds, round(elapsed, 2),
                      self.method if self.frames else "pca", self.sample, **extra)
        self.frames.append(frame)
        return frame

    def _layout(self, x: np.ndarray, fixed: float, step: int, elapsed: float) -> np.ndarray:
        if not self.frames:
            xy = aligned_pca(x, None)  # t-SNE's own initialisation: every later frame moves from here
            t1 = time.perf_counter()
            self._tsne_start = warm_tsne(x, xy / (np.std(xy[:, 0]) or 1.0) * TSNE_INIT_STD)
            self._tsne_trial = time.perf_counter() - t1
        else:
            if len(self.frames) == 1:
                self.method = self._choose(fixed, step, elapsed)
                if self.method == "tsne":  # the untrained frame gets its t-SNE layout too: no jump to frame 2
                    self.frames[0] = replace(self.frames[0], xy=to_box(self._tsne_start), method="tsne")
            if self.method == "tsne":
                self._tsne_start = xy = warm_tsne(x, self._tsne_start)
            else:
                xy = aligned_pca(x, self.frames[-1].xy.astype(np.float64))
        return xy

    def _choose(self, fixed: float, step: int, elapsed: float) -> str:
        """t-SNE when a frame with it fits BUDGET of an epoch at the pace measured so far."""
        training = max(1e-9, elapsed - sum(f.seconds for f in self.frames))
        epoch_seconds = training / max(1, step) * self.steps_per_epoch
        return "tsne" if fixed + self._tsne_trial <= BUDGET * epoch_seconds else "pca"

    def _epoch(self, step: int) -> float:
        e = step / self.steps_per_epoch
        return int(e) if e == int(e) else round(e, 3)

    def _confusion(self, model: SSLModel) -> list:
        was = model.training
        model.eval()
        rotated, turns = all_rotations(self.turns)
        pred = model(normalize(rotated).contiguous(memory_format=torch.channels_last)).argmax(1)
        model.train(was)
        counts = torch.zeros(4, 4, dtype=torch.long)
        counts.index_put_((turns.cpu(), pred.cpu()), torch.ones_like(turns.cpu()), accumulate=True)
        return counts.tolist()

    def _distances(self, model: SSLModel, emb: torch.Tensor) -> dict:
        images, (ca, cb, csame) = self.calibration
        threshold = calibrate_threshold(pair_distances(embed(model, images), ca, cb), csame.numpy())
        a, b, same = self.pairs
        d = pair_distances(emb, a, b)
        s = same.numpy() > 0.5
        edges = np.linspace(0.0, max(float(d.max()), threshold) * 1.02 + 1e-6, HIST_BINS + 1)
        return {"edges": [round(float(v), 4) for v in edges], "same": np.histogram(d[s], edges)[0].tolist(),
                "different": np.histogram(d[~s], edges)[0].tolist(), "threshold": round(float(threshold), 4)}


# ------------------------------------------------------------------------------------------- files
def to_json(frames: list[Frame]) -> str:
    """frames.json: the sample once, then per frame its numbers and positions as integers."""
    s = frames[0].sample
    body = {"format": FORMAT, "task": s.task, "dataset": s.dataset, "class_names": list(s.class_names),
            "rows": s.rows.tolist(), "labels": s.labels.tolist(), "knn": KNN_ABOUT, "quant": QUANT,
            "frames": [{**{k: v for k, v in f.to_dict().items() if k != "points"},
                        "x": np.rint(f.xy[:, 0] * QUANT).astype(int).tolist(),
                        "y": np.rint(f.xy[:, 1] * QUANT).astype(int).tolist()} for f in frames]}
    return json.dumps(body, separators=(",", ":"))


def load(folder: str | os.PathLike) -> list[Frame]:
    """A checkpoint's frames; [] when it has none. Raises FramesError when the file is damaged."""
    path = Path(folder) / FRAMES_FILE
    if not path.is_file():
        return []
    name = f"{Path(folder).name}/{FRAMES_FILE}"
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError("too large")
        text = path.read_text()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FramesError(f"{name} is damaged and cannot be replayed ({exc}); the model itself still works.") from exc
    return from_json(text, name)


def from_json(text: str, name: str = FRAMES_FILE) -> list[Frame]:
    """Frames from `to_json`'s text; raises FramesError naming `name` when it is damaged."""
    try:
        body = json.loads(text)
        if body.get("format") != FORMAT:
            raise ValueError(f"format {body.get('format')!r}, expected {FORMAT}")
        q = float(body["quant"])
        sample = Sample(body["task"], np.asarray(body["rows"], dtype=np.int64), np.asarray(body["labels"], dtype=np.int64),
                        tuple(body["class_names"]), body["dataset"])
        out = []
        for f in body["frames"]:
            if not len(f["x"]) == len(f["y"]) == len(sample.rows):
                raise ValueError(f"a frame has {len(f['x'])} points for a sample of {len(sample.rows)}")
            xy = np.stack([np.asarray(f["x"], dtype=np.float32), np.asarray(f["y"], dtype=np.float32)], axis=1) / q
            out.append(Frame(f["epoch"], int(f["step"]), f["knn_accuracy"], xy.astype(np.float32), float(f["seconds"]),
                             float(f["elapsed"]), str(f["method"]), sample, f.get("confusion"), f.get("distances")))
        return out
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FramesError(f"{name} is damaged and cannot be replayed ({exc}); the model itself still works.") from exc
