"""A run's learning frames as the app shows them (live and replayed), and a model's held-out sample
exported for TensorBoard's Embedding Projector.

One frame is shown as: the sample's map (plotly, coloured by class; hover gives class and test
image number), the same positions drawn with the images themselves (a picture map: plotly cannot
show images in its hover), and per task a 4x4 table of turns or the same/different distance
histograms. A frame's images are the run's own (live) or re-read from the test split (replayed).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open

from . import plots
from .data import TINY_IMAGENET, DataError
from .evaluate import format_metric
from .frames import KNN_ABOUT, Frame, sample_rows
from .maps import held_out, mosaic, reference
from .registry import LoadedModel


@dataclass
class FrameView:
    map: Any  # plotly figure of the sample's positions
    panel: Any  # plotly figure: the turns table (rotation) or the distance histograms; None if neither
    picture: Optional[Image.Image]  # the sample's images at their places; None when the images are gone
    text: str  # markdown: which frame, its kNN accuracy, what it cost


# How a frame's positions were laid out, as its caption says it (frames.Recorder._layout).
LAYOUTS = {"first": "PCA of the untrained embedding (the first frame: nothing before it to align to)",
           "pca": "PCA aligned to the previous frame", "tsne": "t-SNE from the previous frame"}


def epoch_label(epoch: float) -> str:
    """"12", "1.5", "145.9": a frame within an epoch (short runs, a budget's last) to one decimal."""
    return f"{round(epoch, 1):g}"


def describe(frame: Frame, index: int, count: int) -> str:
    s = frame.sample
    knn = "" if frame.knn_accuracy is None else f" · kNN accuracy **{format_metric('knn_accuracy', frame.knn_accuracy)}**"
    when = "untrained encoder" if frame.step == 0 else f"epoch {epoch_label(frame.epoch)}, step {frame.step}"
    return (f"**Frame {index + 1} of {count}**: {when}{knn} on the {s.about} ({KNN_ABOUT}). "
            f"Layout: {LAYOUTS['first' if index == 0 else frame.method]}; "
            f"this frame cost {frame.seconds:.2f} s at {frame.elapsed:.0f} s of training.")


def view(frames: list[Frame], index: int, name: str, images: Optional[torch.Tensor] = None) -> FrameView:
    """Frame `index` of `frames` (clamped); `images`: the sample's images when the frames lack them."""
    index = max(0, min(int(index), len(frames) - 1))
    f, s = frames[index], frames[index].sample
    when = "untrained" if f.step == 0 else f"epoch {epoch_label(f.epoch)}"
    # Titles stay short (half-width plots); the caption names the sample in full.
    fig = plots.frame_map(f.xy, s.labels, s.class_names, s.rows, f"{name} · {when}")
    panel = None
    if f.confusion is not None:
        panel = plots.turn_confusion(f.confusion, f"Turn said for each turn applied · {sum(map(sum, f.confusion)) // 4} "
                                                  f"held-out images × 4 · {when}")
    elif f.distances is not None:
        panel = plots.distance_histograms(f.distances, f"Held-out pair distances · {when}")
    images = s.images if s.images is not None else images
    picture = None if images is None else mosaic(images, f.xy)
    return FrameView(fig, panel, picture, describe(f, index, len(frames)))


def sample_images(model: LoadedModel, frames: list[Frame]) -> Optional[torch.Tensor]:
    """The sample's images of a saved run, re-read from its test split, or for CIFAR-10 from the
    shipped copy of the frames' sample when CIFAR-10 is not on this machine (a Space); None when
    neither has them (a folder that is gone, or a split other than the frames were taken on)."""
    rows = frames[0].sample.rows
    try:
        test, _ = held_out(model.card)  # CIFAR-10 itself, or else the 2,000 images of the maps
    except (DataError, OSError):
        test = None
    if test is not None and len(test) == model.card.get("metrics", {}).get("test_images") and rows.max(initial=-1) < len(test):
        return test.images[torch.as_tensor(rows)]
    return _shipped_frame_sample(model.card, rows)


ASSETS = Path(__file__).resolve().parent.parent / "assets"
# Per named data set: the shipped copy of its runs' frame sample, and the test split it was drawn from.
FRAME_SAMPLES = {"cifar10": (ASSETS / "cifar10-frame-sample.safetensors", 10_000),
                 TINY_IMAGENET: (ASSETS / "photos-test-sample.safetensors", 10_026)}


def _shipped_frame_sample(card: dict, rows: np.ndarray) -> Optional[torch.Tensor]:
    """assets/cifar10-frame-sample.safetensors (assets/make_cifar10_sample.py), and the photo sample
    (assets/make_photos_sample.py): every run on a named set shows the same rows of its test split,
    so one shipped copy serves them all."""
    path, test_images = FRAME_SAMPLES.get(card.get("dataset", ""), (None, None))
    if path is None or card.get("metrics", {}).get("test_images") != test_images:
        return None
    try:
        with safe_open(str(path), "pt") as f:
            if not np.array_equal(f.get_tensor("rows").numpy(), rows):
                return None
            return f.get_tensor("images")
    except (OSError, SafetensorError):
        return None


def projector_files(model: LoadedModel, folder: str | os.PathLike, frames: Optional[list[Frame]] = None) -> tuple[Path, Path]:
    """`vectors.tsv` (one embedding per line, tab-separated, no header) and `metadata.tsv` (header
    `index<TAB>class`, then the test-split row and class name per line) of the model's held-out
    sample: what TensorBoard's Embedding Projector (projector.tensorflow.org) loads. The sample is
    the frames' own when the model has frames, else the same stratified draw from its test split."""
    ref = reference(model)
    labels = ref.images.labels
    rows = frames[0].sample.rows if frames else sample_rows(labels, len(ref.images), class_names=ref.images.class_names).numpy()
    if rows.max(initial=-1) >= len(ref.images):
        rows = sample_rows(labels, len(ref.images), class_names=ref.images.class_names).numpy()  # the frames' split is not the one on hand
    vectors = "\n".join("\t".join(f"{v:.6g}" for v in ref.embeddings[int(r)].tolist()) for r in rows) + "\n"
    meta = "index\tclass\n" + "".join(f"{int(r)}\t{ref.class_name(int(r))}\n" for r in rows)
    out = Path(folder) / model.key[:16]
    return _write(out / "vectors.tsv", vectors), _write(out / "metadata.tsv", meta)


def _write(path: Path, text: str) -> Path:
    """Atomically: a browser downloading the file never gets half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def knn_story(frames: list[Frame]) -> str:
    """One line: how the sample's kNN accuracy moved from the first frame to the last."""
    known = [f for f in frames if f.knn_accuracy is not None]
    if len(known) < 2:
        return ""
    a, b = known[0], known[-1]
    return (f"kNN accuracy of the held-out sample: {format_metric('knn_accuracy', a.knn_accuracy)} untrained → "
            f"{format_metric('knn_accuracy', b.knn_accuracy)} at epoch {epoch_label(b.epoch)}; "
            f"{len(frames)} frames, {np.mean([f.seconds for f in frames]):.2f} s each on average.")
