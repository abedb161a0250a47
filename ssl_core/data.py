"""Every image source becomes the same thing: an `ImageSet` of uint8 (N,3,S,S) tensors, S the run's
image size (32 by default: CIFAR-10's own; the photo models train at 64).

Sources: scikit-learn's bundled digits (the offline default), CIFAR-10 (the official python batches,
downloaded with their md5 check, or image folders `train/<class>/`, `test/<class>/`), and a folder
of the user's own images. Decoded once and cached as tensors (safetensors, never pickle); a set
that comes with its own train/test split keeps it, so metrics are on its official test images.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import cifar_files
from .cifar_files import ProgressFn
from .errors import DataError
from .folders import class_entries, split_folders
from .images import IMAGE_SUFFIXES, SIZE, to_model_image, to_model_images, to_pil

DIGITS_CLASSES = [str(d) for d in range(10)]
TINY_IMAGENET, TINY_IMAGENET_FOLDER, TINY_IMAGENET_CLASSES = "tiny-imagenet", "tiny-imagenet-jpeg", 202
CIFAR10_CLASSES = cifar_files.CLASSES
CIFAR10_FOLDER = cifar_files.FOLDER
# The app's cap on a folder (a visitor's upload): room for all of CIFAR-10 as image files (60,000);
# beyond that, decoding keeps the one shared job busy. The CLI passes None: a user's own big set.
MAX_FOLDER_IMAGES = 100_000
DECODE_THREADS = min(4, os.cpu_count() or 1)  # libjpeg and PIL release the GIL while decoding


@dataclass(frozen=True)
class ImageSet:
    """Images as one uint8 tensor, the way the training engine wants them."""

    images: torch.Tensor  # uint8 (N, 3, S, S), RGB; S is `image_size`
    labels: Optional[torch.Tensor]  # int64 (N,), or None for an unlabeled folder
    class_names: list[str]  # index -> name; empty when unlabeled
    name: str  # "digits", "cifar10" or "folder:<name>", shown next to every metric
    # True for the images of the set's own test split (CIFAR-10's 10,000 test images, a folder's
    # test/); None when the set has none and `split` draws a seeded one.
    test_mask: Optional[torch.Tensor] = None
    source: str = ""  # where the pixels came from, for the card: "CIFAR-10 (JPEG copy)"

    def __post_init__(self) -> None:
        shape = tuple(self.images.shape)
        if self.images.dtype != torch.uint8 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise ValueError(f"images must be uint8 (N,3,S,S), got {self.images.dtype} {shape}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length")
        if self.test_mask is not None and (self.test_mask.dtype != torch.bool or len(self.test_mask) != len(self.images)):
            raise ValueError("test_mask must be a bool tensor with one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def subset(self, index: torch.Tensor) -> "ImageSet":
        labels = None if self.labels is None else self.labels[index]
        mask = None if self.test_mask is None else self.test_mask[index]
        return ImageSet(self.images[index], labels, self.class_names, self.name, mask, self.source)


@dataclass(frozen=True)
class Split:
    train: ImageSet
    test: ImageSet


def split(data: ImageSet, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """The set's own split when it has one (`test_mask`), else a fixed, seeded, stratified one.

    A published split is what results are compared on, so it wins over `test_fraction`. Otherwise
    stratified so a 10-image class never lands wholly in one side; the same seed always gives the
    same split, so the app, the CLI and the tests report metrics on the same held-out images.
    """
    if data.test_mask is not None:
        test_i = torch.nonzero(data.test_mask).flatten()
        train_i = torch.nonzero(~data.test_mask).flatten()
        if len(test_i) == 0 or len(train_i) == 0:
            raise DataError(f"{data.name}: its train/test split leaves one side empty.")
        return Split(data.subset(train_i), data.subset(test_i))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    if len(data) < 4:
        raise DataError(f"{data.name}: only {len(data)} images; at least 4 are needed to train and test.")
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.arange(len(data))] if data.labels is None else [
        torch.nonzero(data.labels == c).flatten() for c in torch.unique(data.labels)
    ]
    train_idx, test_idx = [], []
    for g in groups:
        g = g[torch.randperm(len(g), generator=gen)]
        n_test = int(round(len(g) * test_fraction)) if len(g) > 1 else 0
        test_idx.append(g[:n_test])
        train_idx.append(g[n_test:])
    train_i, test_i = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    if len(test_i) == 0 or len(train_i) == 0:
        raise DataError(f"{data.name}: too few images to hold some out for testing.")
    return Split(data.subset(train_i), data.subset(test_i))


# --------------------------------------------------------------------------------------- digits
def load_digits(size: int = SIZE) -> ImageSet:
    """scikit-learn's 1,797 8x8 handwritten digits, as dark ink on white paper at 32x32.

    Stored inverted (the raw values are ink density) so a digit sketched in the browser, black on
    white, looks like the training data; enlarged through the same `to_model_image` as uploads.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    paper = (255 - np.round(bunch.images * (255.0 / 16.0))).astype(np.uint8)  # (N, 8, 8)
    images = torch.stack([to_model_image(p, size=size) for p in paper])
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return ImageSet(images, labels, list(DIGITS_CLASSES), "digits")


# ------------------------------------------------------------------------------------- CIFAR-10
def load_cifar10(root: Optional[str | os.PathLike] = None, download: bool = True, verify: bool = True,
                 progress: Optional[ProgressFn] = None, size: int = SIZE) -> ImageSet:
    """CIFAR-10's 60,000 images with the official split: 50,000 train, the 10,000 test images held out.

    `root` holds either the official `cifar-10-batches-py` (downloaded when absent and `download`)
    or image folders `train/<class>/`, `test/<class>/` (a JPEG or PNG copy). `verify=True` (always,
    outside tests) checks the official files' md5 sums, so a half-downloaded or tampered folder is
    refused. Decoded tensors are cached, so a second load takes a second or two. `size` other than
    32 enlarges the images (bicubic, as an upload would be), for runs that compare image sizes.
    """
    root = Path(root or default_data_dir())
    if split_folders(root) is not None:
        return _cifar10_from_folders(root, progress, size)
    folder = root / CIFAR10_FOLDER
    if download and not folder.is_dir():
        cifar_files.download(root, progress)
    if not folder.is_dir():
        raise DataError(
            f"CIFAR-10 is not available: no '{CIFAR10_FOLDER}' folder and no train/ and test/ image folders in "
            f"{root.resolve()}, and no download was possible. Put an extracted copy there, or use the offline "
            "'digits' dataset."
        )
    if verify:
        cifar_files.verify(root)
    names = cifar_files.TRAIN_BATCHES + [cifar_files.TEST_BATCH]
    key = fingerprint(folder, [(n, (folder / n).stat()) for n in names + ["batches.meta"] if (folder / n).is_file()])
    cached = read_cache(key)
    if cached is not None:
        return resized(cached, size)
    parts = []
    for i, name in enumerate(names):
        if progress:
            progress(f"decoding CIFAR-10 {name}", i / len(names))
        try:
            parts.append(cifar_files.read_batch(folder / name))
        except FileNotFoundError as exc:
            raise DataError(f"CIFAR-10 folder {folder} is incomplete: {name} is missing.") from exc
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"CIFAR-10 file {folder / name} is damaged ({exc}); delete the folder and download again.") from exc
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    test_mask = torch.zeros(len(images), dtype=torch.bool)
    test_mask[len(images) - len(parts[-1][0]):] = True  # test_batch comes last
    data = ImageSet(images, labels, cifar_files.read_class_names(folder), "cifar10", test_mask,
                    "CIFAR-10 (official python batches)")
    write_cache(key, data)
    return resized(data, size)


def resized(data: ImageSet, size: int) -> ImageSet:
    """`data` at `size` pixels a side: unchanged when it is already, else every image resized the
    way `images.to_model_image` resizes an upload (PIL bicubic), so the set and uploads agree."""
    if data.image_size == size:
        return data
    images = torch.stack([to_model_image(to_pil(img), size=size) for img in data.images])
    return ImageSet(images, data.labels, data.class_names, data.name, data.test_mask, data.source)


def _cifar10_from_folders(root: Path, progress: Optional[ProgressFn], size: int) -> ImageSet:
    data = load_folder(root, progress, size=size)
    if sorted(data.class_names) != sorted(CIFAR10_CLASSES):
        raise DataError(
            f"{root}: train/ should hold CIFAR-10's ten class folders ({', '.join(CIFAR10_CLASSES)}); "
            f"found {', '.join(data.class_names) or 'none'}. Use the 'folder' dataset for other images."
        )
    test_dir = split_folders(root)[1]  # type: ignore[index]  # the caller checked there is one
    suffixes = {f.suffix.lower() for f in (test_dir / data.class_names[0]).iterdir()}
    kind = "JPEG" if suffixes & {".jpg", ".jpeg"} else "image-folder"
    return ImageSet(data.images, data.labels, data.class_names, "cifar10", data.test_mask, f"CIFAR-10 ({kind} copy)")


# ---------------------------------------------------------------------------------- tensor cache
def tensor_cache_dir() -> Path:
    return default_data_dir() / "tensors"


def fingerprint(root: Path, files: list[tuple[str, os.stat_result]]) -> str:
    """Names, sizes and modification times of a set's files: any change there means a new decode."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for rel, st in files:
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


def read_cache(key: str) -> Optional[ImageSet]:
    """The decoded set saved under `key`, or None. safetensors holds tensors only: nothing runs on load."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = tensor_cache_dir() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        t = load_file(str(path))
        return ImageSet(t["images"], t.get("labels"), json.loads(meta["class_names"]), meta["name"],
                        t.get("test_mask"), meta.get("source", ""))
    except (SafetensorError, OSError, KeyError, ValueError):
        path.unlink(missing_ok=True)  # damaged or from an older layout: decode again
        return None


def write_cache(key: str, data: ImageSet) -> None:
    """Save atomically (temp file + rename); a cache that cannot be written only costs a decode."""
    from safetensors.torch import save_file

    tensors = {"images": data.images.contiguous()}
    if data.labels is not None:
        tensors["labels"] = data.labels.contiguous()
    if data.test_mask is not None:
        tensors["test_mask"] = data.test_mask.contiguous()
    meta = {"class_names": json.dumps(data.class_names), "name": data.name, "source": data.source}
    path = tensor_cache_dir() / f"{key}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- folder
def load_folder(path: str | os.PathLike, progress: Optional[ProgressFn] = None,
                max_images: Optional[int] = MAX_FOLDER_IMAGES, size: int = SIZE) -> ImageSet:
    """The user's own images at `size` pixels a side, at most `max_images` (None: no cap). Class
    sub-folders give labels; a flat folder is unlabeled.

    A folder with `train/` and `test/` (or `val/`) keeps that split, classes named by the
    sub-folders of `train/`. Files that are not images are skipped; nothing outside `path` is read
    because symlinks that leave it are ignored.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"Image folder not found: {path}")
    parts = split_folders(root)
    if parts is None:
        entries, class_names, labeled = class_entries(root, root, None)
        in_test = [False] * len(entries)
    else:
        entries, class_names, labeled = class_entries(parts[0], root, None)
        test_entries, _, _ = class_entries(parts[1], root, class_names if labeled else [])
        in_test = [False] * len(entries) + [True] * len(test_entries)
        entries += test_entries
    if max_images is not None and len(entries) > max_images:
        raise DataError(f"{root.name} holds {len(entries):,} images; at most {max_images:,} can be used here. "
                        "Use a smaller selection (the command line takes larger sets).")
    key = fingerprint(root, [(f.rel, f.stat) for f, _ in entries])
    key += "" if size == SIZE else f"-{size}px"  # the default keeps its old key: 32-px caches stay valid
    name, source = _folder_identity(root, parts is not None, len(class_names))
    cached = read_cache(key)
    if cached is not None and cached.image_size == size:
        return replace(cached, name=name, source=source)
    label = f"{root.name} ({2 * len(entries) * 3 * size * size / 1e9:.1f} GB in memory)"  # tiles + their stack
    images = _decode_all([f.path for f, _ in entries], label, progress, size)
    ok = [i for i, img in enumerate(images) if img is not None]
    if not ok:
        raise DataError(f"No readable images in {root.name} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    labels = [entries[i][1] for i in ok]
    if labeled:
        used = sorted(set(labels))
        remap = {old: new for new, old in enumerate(used)}
        class_names = [class_names[u] for u in used]
        labels = [remap[x] for x in labels]
    test_mask = torch.tensor([in_test[i] for i in ok], dtype=torch.bool) if parts is not None else None
    data = ImageSet(
        torch.stack([images[i] for i in ok]),
        torch.tensor(labels, dtype=torch.int64) if labeled else None,
        class_names,
        name,
        test_mask,
        source,
    )
    write_cache(key, data)
    return data


def _folder_identity(root: Path, has_split: bool, classes: int) -> tuple[str, str]:
    """(name, source) of a folder set. The shared Tiny ImageNet copy (its folder name, its own split,
    its 202 classes) is named as the photo models' cards and captions name it, not by its path."""
    if root.name == TINY_IMAGENET_FOLDER and has_split and classes == TINY_IMAGENET_CLASSES:
        return TINY_IMAGENET, f"Tiny ImageNet (JPEG copy, 64 px, {classes} classes)"
    return f"folder:{root.name}", f"folder {root.name}" + (" (its own train/test split)" if has_split else "")


def _decode_all(files: list[str], label: str, progress: Optional[ProgressFn], size: int) -> list[Optional[torch.Tensor]]:
    """Every file as `to_model_image` decodes it (None where it is not a readable image), on a few threads."""
    out: list[Optional[torch.Tensor]] = []
    chunk, piece = 4000, 250  # progress every `chunk` files; threads take `piece` files at a time
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for i in range(0, len(files), chunk):
            if progress:
                progress(f"decoding {len(files):,} images in {label}: {i:,} done", i / max(1, len(files)))
            part = files[i : i + chunk]
            for decoded in pool.map(lambda chunk: to_model_images(chunk, size), [part[j : j + piece] for j in range(0, len(part), piece)]):
                out += decoded
    return out


# ---------------------------------------------------------------------------------------- entry
def default_data_dir() -> Path:
    return Path(os.environ.get("SSL_DATA_DIR", Path.home() / ".cache" / "ssl_playground"))


def load_dataset(name: str, data_dir: Optional[str | os.PathLike] = None, progress: Optional[ProgressFn] = None,
                 verify: bool = True, max_images: Optional[int] = MAX_FOLDER_IMAGES, image_size: int = SIZE) -> ImageSet:
    """Load `digits`, `cifar10` (from/into `data_dir`) or `folder` (`data_dir`, at most `max_images`),
    every image `image_size` pixels a side."""
    if name == "digits":
        return _digits_cached() if image_size == SIZE else load_digits(image_size)
    if name == "cifar10":
        return load_cifar10(data_dir, progress=progress, verify=verify, size=image_size)
    if name == "folder":
        if not data_dir:
            raise DataError("The 'folder' dataset needs a folder of images (--data-dir).")
        return load_folder(data_dir, progress=progress, max_images=max_images, size=image_size)
    raise DataError(f"Unknown dataset '{name}'; choose digits, cifar10 or folder.")


_DIGITS: Optional[ImageSet] = None


def _digits_cached() -> ImageSet:
    # Decoded once per process: the app asks for them on every tab.
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits()
    return _DIGITS
