"""CIFAR-10's official python files: download (resumable, md5-checked), verification, reading a
batch, and writing a fake set in the same layout for tests and benchmarks.

`cifar-10-batches-py/` holds data_batch_1..5 (the 50,000 training images), test_batch (the 10,000
test images) and batches.meta; each batch is a pickled dict whose `data` rows are 1024 R | 1024 G |
1024 B bytes of a 32x32 image. `ssl_core.data` turns them into an `ImageSet`.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"

ProgressFn = Callable[[str, float], None]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # CIFAR-10's own format is a pickle. It is only read from a folder the user or torchvision
    # put there (md5-checked on download); nothing that ships with a model is ever unpickled.
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return data, labels


def read_class_names(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CLASSES)
    with open(meta, "rb") as f:
        return list(pickle.load(f, encoding="latin1").get("label_names", CLASSES))


def verify(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    bad = [name for name, md5 in CIFAR10.train_list + CIFAR10.test_list if not md5_ok(root / FOLDER / name, md5)]
    if bad:
        raise DataError(
            f"CIFAR-10 files in {(root / FOLDER).resolve()} failed their checksum ({', '.join(bad)}): "
            "the copy is incomplete or altered. Delete the folder to download it again."
        )


def md5_ok(path: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


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


def download(root: Path, progress: Optional[ProgressFn]) -> None:
    """Fetch CIFAR-10's archive (resumable, with progress), check torchvision's md5, then extract.

    Extraction goes to a temporary folder renamed into place at the end, so an interrupted run
    leaves no half-extracted `cifar-10-batches-py`; the archive's members are extracted with
    tarfile's "data" filter, which refuses absolute paths, links and paths leaving the folder.
    """
    import tarfile

    from torchvision.datasets import CIFAR10

    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE
    try:
        if not (archive.is_file() and md5_ok(archive, CIFAR10.tgz_md5)):
            _fetch(URL, archive, progress)
    except Exception as exc:  # noqa: BLE001 - any network failure becomes one clear message
        raise DataError(
            f"CIFAR-10 could not be downloaded into {root.resolve()} ({type(exc).__name__}: {exc}). "
            "Check the network and try again (the download resumes where it stopped), or use the offline "
            "'digits' dataset."
        ) from exc
    if not md5_ok(archive, CIFAR10.tgz_md5):
        archive.unlink()
        raise DataError("The downloaded CIFAR-10 archive failed its checksum and was deleted; try again.")
    if progress:
        progress("extracting CIFAR-10", 1.0)
    tmp = root / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp / FOLDER, root / FOLDER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_fake(root: str | os.PathLike, per_batch: int = 2000, seed: int = 0) -> Path:
    """`root/cifar-10-batches-py` in CIFAR-10's python layout (5 data batches, test_batch,
    batches.meta; pickled dicts of rows 1024 R | 1024 G | 1024 B), filled with random pixels.

    The files are ours, so their md5 sums are not CIFAR-10's: readers must be told to skip the check.
    """
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in TRAIN_BATCHES + [TEST_BATCH]:
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, per_batch).tolist(),
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"img_{i:05d}.png" for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return Path(root)


