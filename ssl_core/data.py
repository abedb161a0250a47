"""Every image source becomes the same thing: an `ImageSet` of uint8 (N,3,32,32) tensors.

Sources: scikit-learn's bundled digits (the offline default), CIFAR-10 (torchvision download with
its md5 check, or an existing `cifar-10-batches-py` folder), and a folder of the user's own images.
Decoded once and cached as tensors; never re-read per sample.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .images import IMAGE_SUFFIXES, ImageError, to_model_image

DIGITS_CLASSES = [str(d) for d in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FOLDER = "cifar-10-batches-py"
# Folder datasets: enough to train on, small enough to decode in seconds.
MAX_FOLDER_IMAGES = 20_000

ProgressFn = Callable[[str, float], None]


class DataError(RuntimeError):
    """A data set that cannot be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class ImageSet:
    """Images as one uint8 tensor, the way the training engine wants them."""

    images: torch.Tensor  # uint8 (N, 3, 32, 32), RGB
    labels: Optional[torch.Tensor]  # int64 (N,), or None for an unlabeled folder
    class_names: list[str]  # index -> name; empty when unlabeled
    name: str  # "digits", "cifar10" or "folder:<name>", shown next to every metric

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or tuple(self.images.shape[1:]) != (3, 32, 32):
            raise ValueError(f"images must be uint8 (N,3,32,32), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def subset(self, index: torch.Tensor) -> "ImageSet":
        labels = None if self.labels is None else self.labels[index]
        return ImageSet(self.images[index], labels, self.class_names, self.name)


@dataclass(frozen=True)
class Split:
    train: ImageSet
    test: ImageSet


def split(data: ImageSet, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Fixed, seeded train/test split, stratified by class when there are labels.

    Stratified so a 10-image class never lands wholly in one side; the same seed always gives the
    same split, so the app, the CLI and the tests report metrics on the same held-out images.
    """
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
def load_digits() -> ImageSet:
    """scikit-learn's 1,797 8x8 handwritten digits, as dark ink on white paper at 32x32.

    Stored inverted (the raw values are ink density) so a digit sketched in the browser, black on
    white, looks like the training data; enlarged through the same `to_model_image` as uploads.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    paper = (255 - np.round(bunch.images * (255.0 / 16.0))).astype(np.uint8)  # (N, 8, 8)
    images = torch.stack([to_model_image(p) for p in paper])
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return ImageSet(images, labels, list(DIGITS_CLASSES), "digits")


# ------------------------------------------------------------------------------------- CIFAR-10
def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # CIFAR-10's own format is a pickle. It is only read from a folder the user or torchvision
    # put there (md5-checked on download); nothing that ships with a model is ever unpickled.
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return data, labels


def _cifar_cache_key(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_cifar10(
    root: Optional[str | os.PathLike] = None,
    download: bool = True,
    verify: bool = True,
    progress: Optional[ProgressFn] = None,
) -> ImageSet:
    """CIFAR-10's 60,000 images (train then test batches) from `root/cifar-10-batches-py`.

    `verify=True` (always, outside tests) checks torchvision's md5 sums, so a half-downloaded or
    tampered folder is refused. Decoded tensors are cached next to the folder for instant reloads.
    """
    root = Path(root or default_data_dir())
    folder = root / CIFAR10_FOLDER
    if download and not folder.is_dir():
        _download_cifar10(root, progress)
    if not folder.is_dir():
        raise DataError(
            f"CIFAR-10 is not available: no '{CIFAR10_FOLDER}' folder in {root.resolve()} and no download "
            "was possible. Put an extracted copy there, or use the offline 'digits' dataset."
        )
    if verify:
        _verify_cifar10(root)
    cache = root / f".cifar10-{_cifar_cache_key(folder)}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)  # tensors only: no code can run
            return ImageSet(saved["images"], saved["labels"], list(CIFAR10_CLASSES), "cifar10")
        except Exception:  # noqa: BLE001 - a damaged cache is simply rebuilt
            cache.unlink(missing_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    parts = []
    for i, name in enumerate(names):
        if progress:
            progress(f"decoding CIFAR-10 {name}", i / len(names))
        try:
            parts.append(_cifar_batch(folder / name))
        except FileNotFoundError as exc:
            raise DataError(f"CIFAR-10 folder {folder} is incomplete: {name} is missing.") from exc
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"CIFAR-10 file {folder / name} is damaged ({exc}); delete the folder and download again.") from exc
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    class_names = list(CIFAR10_CLASSES)
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            class_names = list(pickle.load(f, encoding="latin1").get("label_names", class_names))
    _atomic_torch_save({"images": images, "labels": labels}, cache)
    return ImageSet(images, labels, class_names, "cifar10")


def _verify_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    bad = [name for name, md5 in CIFAR10.train_list + CIFAR10.test_list if not _md5_ok(root / CIFAR10_FOLDER / name, md5)]
    if bad:
        raise DataError(
            f"CIFAR-10 files in {(root / CIFAR10_FOLDER).resolve()} failed their checksum ({', '.join(bad)}): "
            "the copy is incomplete or altered. Delete the folder to download it again."
        )


def _md5_ok(path: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


def _fetch(url: str, dest: Path, progress: Optional[ProgressFn], chunk: int = 1 << 20) -> None:
    """Download `url` into `dest`, resuming a `.part` file left by an earlier, interrupted try.

    The bytes go to `dest.part` and only a complete download is renamed to `dest`, so a failure
    halfway never looks like a finished archive.
    """
    import urllib.request

    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        total = have + int(response.headers.get("Content-Length") or 0)
        with open(part, "ab" if have else "wb") as f:
            done = have
            while True:
                block = response.read(chunk)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress and total:
                    progress(f"downloading CIFAR-10: {done / 1e6:.0f} of {total / 1e6:.0f} MB", done / total)
    if total and part.stat().st_size < total:
        raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")
    os.replace(part, dest)


def _download_cifar10(root: Path, progress: Optional[ProgressFn]) -> None:
    """Fetch CIFAR-10's archive (resumable, with progress), check torchvision's md5, then extract.

    Extraction goes to a temporary folder renamed into place at the end, so an interrupted run
    leaves no half-extracted `cifar-10-batches-py`; the archive's members are extracted with
    tarfile's "data" filter, which refuses absolute paths, links and paths leaving the folder.
    """
    import tarfile

    from torchvision.datasets import CIFAR10

    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR10_ARCHIVE
    try:
        if not (archive.is_file() and _md5_ok(archive, CIFAR10.tgz_md5)):
            _fetch(CIFAR10_URL, archive, progress)
    except Exception as exc:  # noqa: BLE001 - any network failure becomes one clear message
        raise DataError(
            f"CIFAR-10 could not be downloaded into {root.resolve()} ({type(exc).__name__}: {exc}). "
            "Check the network and try again (the download resumes where it stopped), or use the offline "
            "'digits' dataset."
        ) from exc
    if not _md5_ok(archive, CIFAR10.tgz_md5):
        archive.unlink()
        raise DataError("The downloaded CIFAR-10 archive failed its checksum and was deleted; try again.")
    if progress:
        progress("extracting CIFAR-10", 1.0)
    tmp = root / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp / CIFAR10_FOLDER, root / CIFAR10_FOLDER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------- folder
def load_folder(path: str | os.PathLike, progress: Optional[ProgressFn] = None) -> ImageSet:
    """The user's own images. Class sub-folders give labels; a flat folder is unlabeled.

    Files that are not images are skipped (and counted in the name); nothing outside `path` is read
    because symlinks that leave it are ignored.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise DataError(f"Image folder not found: {path}")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    entries: list[tuple[Path, int]] = []
    if subdirs:
        for label, d in enumerate(subdirs):
            entries += [(f, label) for f in _image_files(d, root)]
        class_names = [d.name for d in subdirs]
    else:
        entries = [(f, -1) for f in _image_files(root, root)]
        class_names = []
    if len(entries) > MAX_FOLDER_IMAGES:
        entries = entries[:MAX_FOLDER_IMAGES]
    images, labels, skipped = [], [], 0
    for i, (f, label) in enumerate(entries):
        if progress and i % 200 == 0:
            progress(f"reading images from {root.name}", i / max(1, len(entries)))
        try:
            images.append(to_model_image(f))
            labels.append(label)
        except ImageError:
            skipped += 1
    if not images:
        raise DataError(f"No readable images in {root.name} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
    labeled = bool(subdirs)
    if labeled:
        used = sorted(set(labels))
        remap = {old: new for new, old in enumerate(used)}
        class_names = [class_names[u] for u in used]
        labels = [remap[x] for x in labels]
    return ImageSet(
        torch.stack(images),
        torch.tensor(labels, dtype=torch.int64) if labeled else None,
        class_names,
        f"folder:{root.name}",
    )


def _image_files(d: Path, root: Path) -> list[Path]:
    out = []
    for f in sorted(d.rglob("*")):
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and f.resolve().is_relative_to(root):
            out.append(f)
    return out


# ---------------------------------------------------------------------------------------- entry
def default_data_dir() -> Path:
    return Path(os.environ.get("SSL_DATA_DIR", Path.home() / ".cache" / "ssl_playground"))


def load_dataset(
    name: str,
    data_dir: Optional[str | os.PathLike] = None,
    progress: Optional[ProgressFn] = None,
    verify: bool = True,
) -> ImageSet:
    """Load `digits`, `cifar10` (from/into `data_dir`) or `folder` (`data_dir` is the folder)."""
    if name == "digits":
        return _digits_cached()
    if name == "cifar10":
        return load_cifar10(data_dir, progress=progress, verify=verify)
    if name == "folder":
        if not data_dir:
            raise DataError("The 'folder' dataset needs a folder of images (--data-dir).")
        return load_folder(data_dir, progress=progress)
    raise DataError(f"Unknown dataset '{name}'; choose digits, cifar10 or folder.")


_DIGITS: Optional[ImageSet] = None


def _digits_cached() -> ImageSet:
    # Decoding 1,797 tiny images takes ~0.3 s; the app asks for them on every tab.
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits()
    return _DIGITS
