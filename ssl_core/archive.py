"""User data sets that arrive as a .zip upload or a typed folder path, made safe for a public demo.

A zip from a stranger can try to write outside its folder (`../../app.py`, `/etc/x`, a symlink),
expand a few KB into gigabytes, hold pictures whose few KB decode into gigabytes of pixels, or hold
no images at all; a typed path can point at `/etc` or `~/.ssh`. Both are refused here with a
message a user can act on, before any image is decoded: a zip's pictures are sized from their
headers (the first bytes of each member) before a byte is written. Images themselves are still
decoded only by `images.to_model_image` (via `load_folder`).
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import uuid
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from PIL import Image

from .data import DataError
from .images import IMAGE_SUFFIXES, MAX_BYTES, MAX_PIXELS

# Limits sized for "my few thousand photos": generous for real data sets, far below what fills a
# Space's disk. Image files are already compressed, so a real one shrinks little in a zip; a
# member that expands 200x and is over a megabyte is a bomb, not a photo.
MAX_MEMBERS = 25_000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_RATIO = 200
RATIO_MIN_BYTES = 1024 * 1024
FREE_SPACE_MARGIN = 256 * 1024 * 1024  # never fill the disk the app's checkpoints live on
# All of a zip's pictures together, as their headers say: decoding time grows with pixels, not with
# bytes (a 63-megapixel PNG of one colour is 60 KB). 200 MB of phone photos is ~0.7 gigapixels,
# CIFAR-10 whole 0.06; two gigapixels decode in well under a minute on two cores.
MAX_ZIP_PIXELS = 2_000_000_000
HEADER_BYTES = 64 * 1024  # enough for a picture's header behind the usual EXIF and colour-profile blocks
# Folders archivers add that hold no user data (macOS resource forks, thumbnails).
JUNK_DIRS = {"__MACOSX", ".DS_Store", "Thumbs.db", "__pycache__"}

DATA_ROOT_ENV = "SSL_DATA_ROOT"


class ArchiveError(DataError):
    """A zip or folder path that is refused; the message is meant for the user."""


@dataclass(frozen=True)
class ExtractedZip:
    folder: Path  # the folder to hand to `load_folder` (the zip's single top folder, if it had one)
    images: int  # files with an image suffix that were written
    skipped: int  # files left out: not images, archiver junk, or over the per-image size limit

    @property
    def summary(self) -> str:
        """One line for the UI, e.g. '120 images (3 other files skipped)'."""
        extra = f" ({self.skipped} other file{'s' if self.skipped != 1 else ''} skipped)" if self.skipped else ""
        return f"{self.images} image{'s' if self.images != 1 else ''}{extra}"


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path, or ArchiveError if it would land outside the extraction folder."""
    name = info.filename.replace("\\", "/")  # Windows archivers write backslashes
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"The zip was refused: '{info.filename}' is an absolute path.")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveError(f"The zip was refused: '{info.filename}' points outside its folder.")
    if "\x00" in name:
        raise ArchiveError("The zip was refused: a file name contains a NUL byte.")
    # Symlinks are stored as files whose Unix mode says S_IFLNK; writing them would let a later
    # member (or load_folder) follow them anywhere on the server.
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"The zip was refused: '{info.filename}' is a symbolic link.")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _is_junk(rel: PurePosixPath) -> bool:
    return any(p in JUNK_DIRS or p.startswith("._") for p in rel.parts)


def _check_sizes(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"The zip holds {len(infos):,} entries; at most {MAX_MEMBERS:,} are accepted.")
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(
            f"The zip would expand to {total / 2**20:,.0f} MB; at most {MAX_TOTAL_BYTES / 2**20:,.0f} MB are accepted."
        )
    for i in infos:
        if i.file_size > RATIO_MIN_BYTES and i.file_size > MAX_RATIO * max(1, i.compress_size):
            raise ArchiveError(
                f"The zip was refused: '{i.filename}' expands {i.file_size / max(1, i.compress_size):,.0f}x "
                "(a zip bomb, not a photo)."
            )
        if i.flag_bits & 0x1:
            raise ArchiveError("The zip is password-protected; upload an unencrypted zip.")


def _header_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) as a picture's header says, read without decoding a pixel; None when PIL
    cannot identify the bytes (load_folder skips such files); (0, 0) for PIL's own bomb refusal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError:  # over twice PIL's own limit: far over ours
        return (0, 0)
    except Exception:  # noqa: BLE001 - PIL's format plugins raise assorted errors on junk
        return None


def _picture_size(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Optional[tuple[int, int]]:
    """The member's picture size from its first bytes (decompressing only those); the whole member,
    at most MAX_BYTES, where the header lies further in (TIFF keeps it anywhere)."""
    with zf.open(info) as member:
        head = member.read(HEADER_BYTES)
        size = _header_size(head)
        if size is None and len(head) == HEADER_BYTES:
            size = _header_size(head + member.read(MAX_BYTES - HEADER_BYTES))
    return size


def _check_pixels(zf: zipfile.ZipFile, keep: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> None:
    """Refuse the zip before anything is written if one picture is over the per-image pixel limit or
    all of them together would take too long to decode."""
    total, largest = 0, ("", 0, 0)
    for info, _ in keep:
        size = _picture_size(zf, info)
        if size is None:
            continue
        w, h = size
        if w * h > MAX_PIXELS or w * h == 0:
            shown = f"{w}x{h} ({w * h / 1e6:,.0f} megapixels)" if w * h else "too large to decode safely"
            raise ArchiveError(f"The zip was refused: '{info.filename}' is {shown}, over the "
                               f"{MAX_PIXELS // 1_000_000}-megapixel limit for one image.")
        total += w * h
        largest = max(largest, (info.filename, w, h), key=lambda x: x[1] * x[2])
    if total > MAX_ZIP_PIXELS:
        name, w, h = largest
        raise ArchiveError(f"The zip was refused: its images hold {total / 1e9:,.1f} gigapixels together (the largest, "
                           f"'{name}', is {w}x{h}); at most {MAX_ZIP_PIXELS / 1e9:,.0f} are accepted.")


def _copy_capped(src: zipfile.ZipExtFile, dst: Path, limit: int) -> None:
    """Copy at most `limit` bytes: the declared size is checked first, but the count here does not
    trust it."""
    written = 0
    with open(dst, "xb") as out:  # "x": never overwrite (two members with the same name)
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise ArchiveError(f"The zip was refused: '{dst.name}' is larger than its header says.")
            out.write(chunk)


def extract_zip(zip_path: str | os.PathLike, dest_root: str | os.PathLike) -> ExtractedZip:
    """Unpack the images in `zip_path` into a new folder under `dest_root`, all or nothing.

    Refuses (ArchiveError, nothing left behind): a file that is not a zip or is damaged, paths that
    escape the folder (`..`, absolute, symlinks), zip bombs (entry count, total size, compression
    ratio), pixel bombs (a picture over the per-image pixel limit, or too many pixels together, as
    the headers say), encrypted zips, and zips with no images. Non-image files are skipped and counted.
    """
    src = Path(zip_path)
    if not src.is_file():
        raise ArchiveError("The uploaded zip file was not found; please upload it again.")
    if not zipfile.is_zipfile(src):
        raise ArchiveError("This file is not a zip archive; upload a .zip of images (one sub-folder per class, or flat).")
    dest_root = Path(dest_root)
    dest_root.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(src) as zf:
            # Every entry is checked, directories too: one escaping name means a hostile archive.
            paths = {i.filename: _member_path(i) for i in zf.infolist()}
            infos = [i for i in zf.infolist() if not i.is_dir()]
            _check_sizes(infos)
            keep = [
                (i, paths[i.filename])
                for i in infos
                if not _is_junk(paths[i.filename])
                and paths[i.filename].suffix.lower() in IMAGE_SUFFIXES
                and 0 < i.file_size <= MAX_BYTES
            ]
            skipped = len(infos) - len(keep)
            if not keep:
                raise ArchiveError(
                    f"The zip holds no images ({len(infos)} file{'s' if len(infos) != 1 else ''}, none of them "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))})."
                )
            _check_pixels(zf, keep)
            need = sum(i.file_size for i, _ in keep)
            if shutil.disk_usage(dest_root).free < need + FREE_SPACE_MARGIN:
                raise ArchiveError("The server is short of disk space for this zip; try a smaller one.")
            # Build in a hidden temp folder and rename once complete, so a failure or a crash never
            # leaves a half-extracted data set that a later run could train on.
            tag = uuid.uuid4().hex[:12]
            tmp = dest_root / f".zip-{tag}.tmp"
            tmp.mkdir()
            try:
                base = tmp.resolve()
                for info, rel in keep:
                    target = (tmp / rel).resolve()
                    if not target.is_relative_to(base):  # belt and braces after _member_path
                        raise ArchiveError(f"The zip was refused: '{info.filename}' points outside its folder.")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as member:
                        _copy_capped(member, target, info.file_size)
                final = dest_root / f"zip-{tag}"
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"The zip file is damaged or truncated ({exc}).") from exc
    except FileExistsError as exc:
        raise ArchiveError(f"The zip holds the same file twice ({Path(exc.filename or '').name}).") from exc
    except (OSError, EOFError, NotImplementedError, zlib.error) as exc:
        # CRC mismatch, unsupported compression method, truncated member data, name too long.
        raise ArchiveError(f"The zip could not be extracted ({exc}).") from exc
    return ExtractedZip(_single_top_folder(final), len(keep), skipped)


def _single_top_folder(folder: Path) -> Path:
    """Zips made by "compress folder" wrap everything in one top folder; step into it so its
    sub-folders are read as classes, as they would be if the user had typed that folder's path."""
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def safe_extract_zip(zip_path: str | os.PathLike, dest_root: str | os.PathLike) -> Path:
    """`extract_zip` for callers that only need the folder to pass to `load_folder`."""
    return extract_zip(zip_path, dest_root).folder


def on_public_space() -> bool:
    """Hugging Face Spaces set SPACE_ID; there every visitor is a stranger."""
    return bool(os.environ.get("SPACE_ID"))


def serves_the_network() -> bool:
    """True when the app listens beyond this machine (GRADIO_SERVER_NAME=0.0.0.0, a LAN address,
    or a share link): then a typed path is a stranger's request, not the owner's."""
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1").strip().lower()
    share = os.environ.get("GRADIO_SHARE", "").strip().lower() in ("1", "true", "yes")
    return share or host not in ("127.0.0.1", "localhost", "::1", "")


def resolve_data_folder(path: str | os.PathLike, data_root: Optional[str | os.PathLike] = None) -> Path:
    """A folder path typed by a user -> a real folder the server may read, or ArchiveError.

    - On a Space, typed paths are refused outright: uploads (zips) only.
    - With a data root (the argument, else env SSL_DATA_ROOT), the path is read relative to it and
      must stay inside it after symlinks are followed; the message never says whether a path
      outside exists.
    - With neither, any existing folder is allowed only while the app listens on this machine
      alone (the owner's own folders); served to the network, typed paths are refused.
    """
    text = os.fspath(path).strip() if path is not None else ""
    if on_public_space():
        raise ArchiveError("On this public demo, folders on the server cannot be read; upload a .zip of your images instead.")
    if not text:
        raise ArchiveError("Type the path of a folder of images, or upload a .zip.")
    if "\x00" in text:
        raise ArchiveError("That folder path is not valid.")
    root_text = os.fspath(data_root) if data_root else os.environ.get(DATA_ROOT_ENV, "")
    if not root_text:
        if serves_the_network():
            raise ArchiveError(
                f"This server is open to the network, so typed folder paths are off unless its owner sets "
                f"{DATA_ROOT_ENV}; upload a .zip of your images instead."
            )
        folder = Path(text).expanduser().resolve()
    else:
        root = Path(root_text).resolve()
        # Relative paths are taken from the root; an absolute one must still land inside it.
        folder = (root / text).resolve()
        if not folder.is_relative_to(root):
            raise ArchiveError(f"Only folders inside the data folder ({root.name}/) can be used; upload a .zip instead.")
    if not folder.is_dir():
        raise ArchiveError(f"Folder not found: {text}")
    return folder
