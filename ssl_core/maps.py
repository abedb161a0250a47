"""A checkpoint's held-out images as maps: t-SNE and PCA of its embeddings beside an untrained
encoder's, the images themselves drawn at their places (a mosaic), the image at a clicked spot,
and an upload placed among them.

Which held-out images: the test split of the checkpoint's dataset, never trained on. For CIFAR-10
that is all 10,000 test images when they are on this machine (the card's data folder, or where the
app keeps CIFAR-10 when the card names none), else the
2,000 shipped in `assets/cifar10-test-sample.safetensors` (the first 200 files of each class).
Maps always show those same 2,000 images (`MAP_PER_CLASS` per class), so a map looks the same on a
laptop and on a Space and t-SNE stays at seconds; nearest neighbours search everything on hand.
Maps are cached per checkpoint identity (`LoadedModel.key`) by projection.py, in memory and on disk.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from . import TASK_TITLES, dataset_title, plots, projection
from .checkpoints import Checkpoint
from .data import TINY_IMAGENET, TINY_IMAGENET_FOLDER, DataError, ImageSet, default_data_dir, load_dataset, load_folder, split
from .evaluate import embed, format_metric
from .frames import SHOWN_CLASSES, shown_classes
from .images import ImageSource, to_pil
from .inference import embed_image, model_input, random_init_model
from .registry import LoadedModel

SAMPLE_FILE = Path(__file__).resolve().parent.parent / "assets" / "cifar10-test-sample.safetensors"
MAP_PER_CLASS = 200  # images per class on a map: 2,000 for CIFAR-10, all 360 held-out digits
NEIGHBOURS = 5
MOSAIC_CELLS = 36  # the mosaic is a grid of this many cells a side, one image per occupied cell
CELL_PX = 32  # each cell shows its image at the models' own resolution
MAX_REFERENCES = 8  # checkpoints whose held-out embeddings stay in memory (10,000 x 128 x 2 floats each)
MAX_IMAGE_SETS = 4  # held-out image sets kept decoded (CIFAR-10's test split is 30 MB)


@dataclass
class Reference:
    """A checkpoint's held-out images with their embeddings (trained and random-init)."""

    images: ImageSet
    embeddings: torch.Tensor  # (N, D) by the checkpoint's model
    random_embeddings: torch.Tensor  # (N, D) by the untrained model of the same shape and seed
    map_index: torch.Tensor  # rows of `images` drawn on the maps
    about: str  # which images these are, for captions
    map_id: str  # names the mapped images in cache keys

    def class_name(self, i: int) -> str:
        if self.images.labels is None:
            return "unlabeled"
        label = int(self.images.labels[i])
        names = self.images.class_names
        return names[label] if label < len(names) else str(label)

    def nearest(self, emb: torch.Tensor, k: int = NEIGHBOURS) -> list[int]:
        """Rows of the k held-out images closest to `emb` in the trained embedding."""
        d = torch.linalg.vector_norm(self.embeddings - emb.unsqueeze(0), dim=1)
        return [int(i) for i in torch.argsort(d)[:k]]

    def caption(self, i: int, emb: Optional[torch.Tensor] = None) -> str:
        distance = "" if emb is None else f" (d {float(torch.linalg.vector_norm(self.embeddings[i] - emb)):.2f})"
        return f"{self.class_name(i)}{distance}"


_REFS: OrderedDict[str, Reference] = OrderedDict()
_DATA: OrderedDict[str, ImageSet] = OrderedDict()
_LOCK = threading.Lock()


PHOTO_SAMPLE_FILE = SAMPLE_FILE.with_name("photos-test-sample.safetensors")  # assets/make_photos_sample.py


def _sample(path: Path = SAMPLE_FILE) -> ImageSet:
    """A shipped sample of a test split (assets/make_*_sample.py), for machines without the data set."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        name = TINY_IMAGENET if path == PHOTO_SAMPLE_FILE else "cifar10"
        return ImageSet(f.get_tensor("images"), f.get_tensor("labels"), json.loads(meta["class_names"]), name, None,
                        f"{dataset_title(name)} test sample")


def _cifar10_test(data_dir: Optional[str]) -> Optional[ImageSet]:
    """CIFAR-10's 10,000 test images from the card's folder (else where the app downloads CIFAR-10)
    when they are there, else None."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if (root / "test").is_dir():
        return load_folder(root / "test")
    if (root / "cifar-10-batches-py" / "test_batch").is_file():
        return split(load_dataset("cifar10", root), 0.2, 0).test
    return None


def _photos_test(size: int) -> Optional[ImageSet]:
    """The Tiny ImageNet copy's 10,026 test photos where the app keeps its data (SSL_DATA_DIR), else
    None. Its test/ folder alone lists them in the order the full set's split does."""
    test = default_data_dir() / TINY_IMAGENET_FOLDER / "test"
    if not test.is_dir():
        return None
    data = load_folder(test, size=size, max_images=None)
    return ImageSet(data.images, data.labels, data.class_names, TINY_IMAGENET, None, f"{dataset_title(TINY_IMAGENET)} test split")


def _local_or_shipped(card: dict, data_dir: Optional[str]) -> ImageSet:
    """A named data set's test split on this machine, else the shipped sample of it."""
    try:
        images = _cifar10_test(data_dir) if card["dataset"] == "cifar10" else _photos_test(int(card.get("image_size", 32)))
    except DataError:
        images = None  # a damaged local copy: the shipped sample still answers
    return images if images is not None else _sample(SAMPLE_FILE if card["dataset"] == "cifar10" else PHOTO_SAMPLE_FILE)


def held_out(card: dict) -> tuple[ImageSet, str]:
    """The held-out images of the checkpoint's dataset and a caption saying which they are.
    Raises DataError when a folder run's data has gone."""
    cfg = card.get("config", {})
    dataset, data_dir = cfg.get("dataset", card["dataset"]), cfg.get("data_dir")
    fraction, seed, size = float(cfg.get("test_fraction", 0.2)), int(cfg.get("seed", 0)), int(card.get("image_size", 32))
    key = f"{card['dataset']}:{data_dir}:{fraction}:{seed}:{size}"  # a set without its own split draws it from these
    with _LOCK:
        cached = _DATA.get(key)
    if cached is not None:
        images = cached
    elif card["dataset"] in ("cifar10", TINY_IMAGENET):  # named sets: the cards keep no path
        images = _local_or_shipped(card, data_dir)
    else:
        images = split(load_dataset(dataset, data_dir, image_size=size), fraction, seed).test
    with _LOCK:
        _DATA[key] = images
        while len(_DATA) > MAX_IMAGE_SETS:
            _DATA.popitem(last=False)
    title = dataset_title(card["dataset"])
    if images.source.endswith("test sample"):
        shown = (f"{MAP_PER_CLASS} per class" if card["dataset"] == "cifar10" else
                 f"all test photos of {len(set(images.labels.tolist()))} of its {len(images.class_names)} classes")
        return images, (f"the {len(images):,} {title} test images shipped with the app ({shown}); "
                        f"{title} itself is not on this machine")
    return images, f"all {len(images):,} held-out {title} images (test split) on this machine"


def _map_index(images: ImageSet) -> torch.Tensor:
    """The first MAP_PER_CLASS images of each shown class (frames.shown_classes; the shipped samples
    are exactly these)."""
    if images.labels is None:
        return torch.arange(min(len(images), MAP_PER_CLASS * 10))
    shown = set(shown_classes(images.class_names)) if images.class_names else None
    rows = [torch.nonzero(images.labels == c).flatten()[:MAP_PER_CLASS] for c in torch.unique(images.labels)
            if shown is None or int(c) in shown]
    return torch.cat(rows).sort().values


def reference(model: LoadedModel) -> Reference:
    """Held-out images + embeddings for this checkpoint, computed once per identity."""
    with _LOCK:
        if model.key in _REFS:
            _REFS.move_to_end(model.key)
            return _REFS[model.key]
    images, about = held_out(model.card)
    ckpt = model.checkpoint
    index = _map_index(images)
    map_id = f"{model.card['dataset']}/test/first{MAP_PER_CLASS}-per-class/{len(index)}"
    ref = Reference(images, embed(ckpt.model, images.images), embed(random_init_model(ckpt), images.images), index, about, map_id)
    with _LOCK:
        _REFS[model.key] = ref
        while len(_REFS) > MAX_REFERENCES:
            _REFS.popitem(last=False)
    return ref


def _coords(model: LoadedModel, ref: Reference, method: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Map coordinates of the trained and the untrained embedding, and their cache keys."""
    idx = ref.map_index
    keys = (projection.map_key(model.key, ref.map_id), projection.map_key(model.key, ref.map_id + "/random-init"))
    fn = projection.tsne_map if method == "tsne" else projection.pca_map
    return fn(ref.embeddings[idx].numpy(), keys[0]), fn(ref.random_embeddings[idx].numpy(), keys[1]), keys[0], keys[1]


def _figure(model: LoadedModel, ref: Reference, method: str, placed: Optional[list] = None) -> Any:
    m = model.card.get("metrics", {})
    xy, xy_random, _, _ = _coords(model, ref, method)
    knn, knn0 = m.get("knn_accuracy"), m.get("knn_accuracy_random_init")
    sub = f"trained {model.card['task']} encoder" + (f" · kNN acc {format_metric('knn_accuracy', knn)}" if knn is not None else "")
    sub0 = "untrained (random-init) encoder" + (f" · kNN acc {format_metric('knn_accuracy', knn0)}" if knn0 is not None else "")
    labels = None if ref.images.labels is None else ref.images.labels[ref.map_index].numpy()
    classes = len(ref.images.class_names)
    some = f", {len(shown_classes(ref.images.class_names))} of its {classes} classes" if classes > SHOWN_CLASSES else ""
    title = (f"{'t-SNE' if method == 'tsne' else 'PCA'} of {len(ref.map_index):,} held-out "
             f"{dataset_title(model.card['dataset'])} images (test split{some}) · {model.name}")
    return plots.embedding_maps([(xy, sub), (xy_random, sub0)], labels, ref.images.class_names, ref.map_index.numpy(), title, placed)


# ---------------------------------------------------------------------------------------- mosaic
def _cells(xy: np.ndarray, cells: int) -> tuple[dict[tuple[int, int], int], np.ndarray, np.ndarray]:
    """One map point per grid cell (the one nearest the cell's centre), and the bounds used."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    unit = (xy - lo) / np.maximum(hi - lo, 1e-9) * (cells - 1e-6)
    cell = np.floor(unit).astype(int)
    off = np.linalg.norm(unit - cell - 0.5, axis=1)
    best: dict[tuple[int, int], int] = {}
    for i in np.argsort(off):
        best.setdefault((int(cell[i, 0]), int(cells - 1 - cell[i, 1])), int(i))  # image y runs down
    return best, lo, hi


def _grid_size(n: int) -> int:
    return max(8, min(MOSAIC_CELLS, math.ceil(1.6 * math.sqrt(n))))


def _mosaic(ref: Reference, xy: np.ndarray, placed: Optional[tuple[np.ndarray, torch.Tensor]] = None) -> Image.Image:
    return mosaic(ref.images.images[ref.map_index], xy, placed)


def cell_image(image: torch.Tensor) -> Image.Image:
    """One image at a map cell's size: a 64-px photo reduced (area average) to CELL_PX."""
    img = to_pil(image)
    return img if img.size == (CELL_PX, CELL_PX) else img.resize((CELL_PX, CELL_PX), Image.Resampling.BOX)


def mosaic(images: torch.Tensor, xy: np.ndarray, placed: Optional[tuple[np.ndarray, torch.Tensor]] = None) -> Image.Image:
    """uint8 `images` (N,3,S,S) drawn at their map positions `xy` (N,2), one per grid cell of
    CELL_PX (larger images reduced to it); `placed`: (position, image) of an upload, framed in red."""
    cells = _grid_size(len(xy))
    best, lo, hi = _cells(xy, cells)
    canvas = Image.new("RGB", (cells * CELL_PX, cells * CELL_PX), "white")
    for (cx, cy), i in best.items():
        canvas.paste(cell_image(images[i]), (cx * CELL_PX, cy * CELL_PX))
    if placed is not None:  # the upload drawn at its place, framed so it stands out
        at, image = placed
        u = np.clip((at - lo) / np.maximum(hi - lo, 1e-9), 0, 1) * (cells * CELL_PX - 2 * CELL_PX) + CELL_PX / 2
        x, y = int(u[0]), int(cells * CELL_PX - CELL_PX - u[1])
        big = cell_image(image).resize((2 * CELL_PX, 2 * CELL_PX), Image.Resampling.NEAREST)
        ImageDraw.Draw(canvas).rectangle([x - 4, y - 4, x + big.width + 3, y + big.height + 3], fill="#e11d48")
        canvas.paste(big, (x, y))
    return canvas


# ---------------------------------------------------------------------------------- public calls
@dataclass
class MapView:
    tsne: Any  # plotly figure: trained beside untrained
    pca: Any
    mosaic: Image.Image  # the held-out images drawn at their places on the trained t-SNE map
    text: str  # markdown: what is shown, the probes, which images


def _text(model: LoadedModel, ref: Reference) -> str:
    m = model.card.get("metrics", {})
    lines = [f"**{TASK_TITLES[model.card['task']]}**, `{model.name}`. Maps of {len(ref.map_index):,} held-out images; "
             f"nearest neighbours from {ref.about}."]
    for key, what in (("knn_accuracy", "5-NN accuracy of the trained embedding"),
                      ("knn_accuracy_random_init", "5-NN accuracy of an untrained encoder (same architecture and seed)"),
                      ("linear_probe_accuracy", "linear probe accuracy of the trained encoder")):
        if key in m:
            lines.append(f"- {what}: **{format_metric(key, m[key])}** (all {m.get('test_images', '?')} test images)")
    saw = ("the Siamese encoder trained on them (its pairs come from the labels)" if model.card["task"] == "siamese"
           else "this self-supervised encoder never saw them")
    shown = shown_classes(ref.images.class_names)
    some = (f" Only {len(shown)} of the set's {len(ref.images.class_names)} classes are drawn, chosen to look unlike each other, "
            "so the colours stay readable." if len(ref.images.class_names) > len(shown) else "")
    lines.append(f"\nColours are the true classes ({saw}); hover a point for its class and index.{some} "
                 "Click the picture map to see an image and its nearest neighbours.")
    return "\n".join(lines) + (f"\n\n**Note:** {model.note}" if model.note else "")


def show(model: LoadedModel) -> MapView:
    """t-SNE and PCA maps (trained beside untrained), the image mosaic and the caption."""
    ref = reference(model)
    return MapView(_figure(model, ref, "tsne"), _figure(model, ref, "pca"), _mosaic(ref, _coords(model, ref, "tsne")[0]),
                   _text(model, ref))


@dataclass
class Placement:
    tsne: Any  # the t-SNE figure with the upload as a star on both maps
    mosaic: Image.Image  # the mosaic with the upload framed at its place
    neighbours: list[tuple[Image.Image, str]]  # nearest held-out images, enlarged, with class and distance
    text: str


def place(model: LoadedModel, source: ImageSource) -> Placement:
    """An upload placed on the checkpoint's t-SNE maps (trained and untrained) and the mosaic."""
    ref = reference(model)
    ckpt = model.checkpoint
    emb = embed_image(ckpt, source)
    emb0 = embed_image(Checkpoint(random_init_model(ckpt), ckpt.card, ckpt.path), source)
    xy, _, key, key0 = _coords(model, ref, "tsne")
    placed = [projection.place_points(key, emb[None].numpy()), projection.place_points(key0, emb0[None].numpy())]
    near = ref.nearest(emb)
    mosaic = _mosaic(ref, xy, (placed[0][0], model_input(ckpt, source)[1]))
    text = ("Your image is the star on each t-SNE map and the framed picture on the image map. Its nearest held-out "
            "images in the trained embedding: " + ", ".join(f"{ref.class_name(i)} (#{i})" for i in near) + ".")
    return Placement(_figure(model, ref, "tsne", placed), mosaic, [(to_pil(ref.images.images[i], 4), ref.caption(i, emb)) for i in near],
                     text)


def neighbours(model: LoadedModel, source: ImageSource) -> list[tuple[Image.Image, str]]:
    """The nearest held-out images to a picture, enlarged, captioned with class and distance.
    Raises DataError when the checkpoint's data is not on this machine."""
    ref = reference(model)
    emb = embed_image(model.checkpoint, source)
    return [(to_pil(ref.images.images[i], 4), ref.caption(i, emb)) for i in ref.nearest(emb)]


def point_at(model: LoadedModel, x: float, y: float) -> tuple[list[tuple[Image.Image, str]], str]:
    """The held-out image at pixel (x, y) of the mosaic, then its nearest neighbours, and a caption."""
    ref = reference(model)
    xy = _coords(model, ref, "tsne")[0]
    cells = _grid_size(len(xy))
    best, _, _ = _cells(xy, cells)
    cx, cy = int(x) // CELL_PX, int(y) // CELL_PX
    if (cx, cy) not in best:  # an empty cell: the nearest occupied one
        cx, cy = min(best, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)
    row = int(ref.map_index[best[(cx, cy)]])
    emb = ref.embeddings[row]
    near = [i for i in ref.nearest(emb, NEIGHBOURS + 1) if i != row][:NEIGHBOURS]
    gallery = [(to_pil(ref.images.images[row], 4), f"clicked: {ref.class_name(row)} #{row}")]
    gallery += [(to_pil(ref.images.images[i], 4), ref.caption(i, emb)) for i in near]
    same = sum(ref.class_name(i) == ref.class_name(row) for i in near)
    return gallery, f"Test image #{row}, a **{ref.class_name(row)}**; {same} of its {len(near)} nearest neighbours share its class."
