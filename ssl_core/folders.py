"""Finding a set's image files on disk: class sub-folders, a train/test split the set comes with,
symlinks that stay inside it. Listing only (one stat a file, no decoding): data.py decodes, cost.py
counts, the Train tab asks whether a folder changed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional

from .errors import DataError
from .images import IMAGE_SUFFIXES

TEST_FOLDERS = ("test", "val")  # a folder holding train/ and one of these keeps that split


def split_folders(root: Path) -> Optional[tuple[Path, Path]]:
    """(train, test) when `root` holds `train/` and `test/` (or `val/`): a split the set comes with."""
    test = next((root / n for n in TEST_FOLDERS if (root / n).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test is not None else None


class ImageFile(NamedTuple):  # plain strings, not Paths: 60,000 Path objects cost more than listing the files
    path: str
    rel: str  # relative to the set's root, for the cache key
    stat: os.stat_result  # for the cache key, taken while listing: one system call a file


def class_entries(d: Path, root: Path, classes: Optional[list[str]]) -> tuple[list[tuple[ImageFile, int]], list[str], bool]:
    """Image files under `d` with class indices from its sub-folders (or -1 when `d` is flat).

    `classes` fixes the names to use (a test folder follows its train folder); a test sub-folder
    whose class the training split lacks is refused rather than silently dropped.
    """
    subdirs = sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith("."))
    if classes and not subdirs:
        raise DataError(f"{d.name}/ needs the same class sub-folders as train/.")
    if not subdirs or classes == []:
        return [(f, -1) for f in image_files(d, root)], [], False
    names = [x.name for x in subdirs] if classes is None else classes
    unknown = [x.name for x in subdirs if x.name not in names]
    if unknown:
        raise DataError(f"{d.name}/ has classes that train/ lacks: {', '.join(unknown)}.")
    entries = [(f, names.index(x.name)) for x in subdirs for f in image_files(x, root)]
    return entries, list(names), True


def image_files(d: Path, root: Path, dirs: Optional[list[str]] = None) -> list[ImageFile]:
    """Image files under `d`, sorted by path; a symlink counts only if it stays inside `root`.
    `dirs`, when given, gets every folder listed (their mtimes tell when the listing is stale).

    os.scandir rather than Path walking: listing CIFAR-10's 60,000 files is part of every cached
    load, so it must cost one stat a file and no more.
    """
    out: list[ImageFile] = []
    prefix = len(str(root)) + 1
    if dirs is not None:
        dirs.append(str(d))
    with os.scandir(d) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith(".") and e.is_dir():
            continue
        if e.is_dir(follow_symlinks=False):
            out += image_files(Path(e.path), root, dirs)
            continue
        if os.path.splitext(e.name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        if e.is_symlink():
            target = Path(e.path).resolve()
            if not (target.is_relative_to(root) and target.is_file()):
                continue
        try:
            out.append(ImageFile(e.path, e.path[prefix:], e.stat()))
        except OSError:  # vanished or a dangling link: not an image we can read
            continue
    return out
