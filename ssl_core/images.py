"""One way to turn any picture into what the models see: RGB, square, uint8, at the run's size
(32 px for CIFAR-10 and digits, larger for the photo models; a checkpoint's card records it).

The digits set, user folders, uploads in the app and the CLI all go through `to_model_image`, so a
sketch uploaded in the browser is resized exactly as the training data was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

SIZE = 32  # the default image size: CIFAR-10's, the digits set's, and every card without `image_size`
# A 40-megapixel phone photo decodes fine; a crafted 1-gigapixel PNG of a few KB must not.
MAX_PIXELS = 64_000_000
MAX_BYTES = 30 * 1024 * 1024
# A decoded picture over this many pixels is reduced at once, in its own mode, before any copy or
# colour conversion: a 63-megapixel RGBA or 16-bit PNG of a few KB otherwise took ~1 GB through
# them. Nothing shown or fed to a model needs more (displays are 256 px, models 32 to 64).
SHRINK_PIXELS = 4_000_000
# Pictures over SHRINK_PIXELS decode one at a time in this process, whichever thread, visitor or
# data set asks: at most ~0.5 GB (64 megapixels RGBA and its reduction) held by large decodes.
_LARGE_DECODE = threading.Lock()

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


class ImageError(UserError, ValueError):
    """An input that cannot be used as an image; the message is meant for the user."""


def _flatten_alpha(img: Image.Image) -> Image.Image:
    # Transparent pixels become white, as they look on a page, instead of whatever colour
    # happens to be stored under alpha 0 (often black).
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (RGBA, LA, P with transparency, L, I;16, I, F, CMYK, 1) -> RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit depth: scale the real range to 0..255 rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        return _flatten_alpha(img)
    return img.convert("RGB")


def open_image(source: ImageSource, draft_size: Optional[int] = None) -> Image.Image:
    """Decode an image from a path, bytes, file object, array or PIL image, safely.

    "Upright" means as the picture is displayed: EXIF orientation (phone photos) is applied here,
    once, so the rotation demo, the training data and the browser preview all agree.
    Animated images give their first frame. Raises ImageError with a readable message.
    `draft_size`: when only a small version is needed, let JPEG decode at a reduced scale no
    smaller than this on either side, far cheaper than decoding every pixel of a phone photo.
    A file decoding to more than SHRINK_PIXELS is returned reduced to about that (`_shrink`).
    """
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        try:
            return to_rgb(Image.fromarray(arr))
        except (TypeError, ValueError) as exc:
            raise ImageError(f"Could not read the array as an image (shape {source.shape}).") from exc
    if isinstance(source, Image.Image):
        img = source
    else:
        data = _read_bytes(source)
        if not data:
            raise ImageError("The file is empty.")
        head = data[:512].lstrip().lower()
        if head.startswith(b"<?xml") or head.startswith(b"<svg") or b"<svg" in head:
            raise ImageError("SVG (vector) images are not supported; please upload PNG, JPEG, GIF, BMP or WebP.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                _check_pixels(img)
                if draft_size:
                    img.draft(img.mode, (draft_size, draft_size))  # JPEG only; a no-op for other formats
                large = img.width * img.height > SHRINK_PIXELS  # the size the decoder will allocate
                with _LARGE_DECODE if large else contextlib.nullcontext():
                    img.load()
                    img = _shrink(img)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"The image is too large to decode safely (limit {MAX_PIXELS // 1_000_000} megapixels).") from exc
        except UnidentifiedImageError as exc:
            raise ImageError("This file is not an image PIL can read (PNG, JPEG, GIF, BMP, WebP, TIFF...).") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"The image file is damaged or truncated ({exc}).") from exc
    _check_pixels(img)
    if getattr(img, "is_animated", False):
        img.seek(0)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not make a good image unusable
        pass
    return to_rgb(img)


def _shrink(img: Image.Image) -> Image.Image:
    """`img` box-reduced to about SHRINK_PIXELS, its aspect and EXIF orientation kept; unchanged
    when it is not larger. Palette and 1-bit pictures become RGB(A) and L first (a box filter
    cannot average palette indices); PIL's filter weighs colours by alpha, so edges stay clean."""
    w, h = img.size
    if w * h <= SHRINK_PIXELS:
        return img
    try:
        exif = img.getexif().tobytes()  # TIFF keeps its orientation in tags a resized copy drops
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses its orientation
        exif = b""
    if img.mode in ("1", "P", "PA"):
        img = img.convert("L" if img.mode == "1" else "RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    k = math.sqrt(w * h / SHRINK_PIXELS)
    small = img.resize((max(1, int(w / k)), max(1, int(h / k))), Image.Resampling.BOX)
    if exif:
        small.info["exif"] = exif
    return small


def _check_pixels(img: Image.Image) -> None:
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError("The image has no pixels.")
    if w * h > MAX_PIXELS:
        raise ImageError(
            f"The image is {w}x{h} ({w * h / 1e6:.0f} megapixels), over the {MAX_PIXELS // 1_000_000}-megapixel limit."
        )


def _read_bytes(source: Union[str, os.PathLike, bytes, BinaryIO]) -> bytes:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No such image file: {path.name}")
        if path.stat().st_size > MAX_BYTES:
            raise ImageError(f"The file is over {MAX_BYTES // (1024 * 1024)} MB.")
        data = path.read_bytes()
    else:
        data = source.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ImageError(f"The file is over {MAX_BYTES // (1024 * 1024)} MB.")
    return data


FITS = ("squash", "crop", "pad")  # how a non-square picture becomes square; see fit_square


def fit_square(img: Image.Image, fit: str = "squash") -> Image.Image:
    """A square version of `img`: "squash" stretches the whole picture, "crop" keeps the centre
    square, "pad" adds borders in the colour of the picture's edge. Square pictures pass unchanged."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    w, h = img.size
    if w == h or fit == "squash":
        return img
    side = min(w, h) if fit == "crop" else max(w, h)
    if fit == "crop":
        left, top = (w - side) // 2, (h - side) // 2
        return img.crop((left, top, left + side, top + side))
    edge = np.concatenate([np.asarray(img)[[0, -1]].reshape(-1, 3), np.asarray(img)[:, [0, -1]].reshape(-1, 3)])
    square = Image.new("RGB", (side, side), tuple(int(v) for v in np.median(edge, axis=0)))
    square.paste(img, ((side - w) // 2, (side - h) // 2))
    return square


def to_model_image(source: ImageSource, fit: str = "squash", size: int = SIZE) -> torch.Tensor:
    """Picture -> uint8 tensor (3, size, size), exactly as the training pipeline sees its data.

    By default the whole picture is squeezed to a square (no crop) so nothing the user drew is cut
    off; `fit` chooses another way to make it square first (fit_square). PIL's reducing resize
    filters large photos properly instead of aliasing them.
    """
    # 8x the output side keeps the final reducing resize as sharp as from the full decode.
    img = fit_square(open_image(source, draft_size=8 * size), fit)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


# torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; the pinned version
# has them, and should a later one drop them every file simply takes the full path.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def _decode_jpegs(files: list[bytes]) -> list[Optional[torch.Tensor]]:
    """libjpeg-turbo through torchvision, all files in one call; None for each when it cannot."""
    if not files:
        return []
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in files],
                           mode=ImageReadMode.UNCHANGED)
    except (ImportError, RuntimeError):  # no decoder, or one damaged file failed the batch
        return [None] * len(files)


def jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from a JPEG's frame header, read without decoding a pixel; None when the
    bytes hold no frame header. The fast path below decodes only files whose header says they are
    at model size already, so a crafted 70-megapixel JPEG never reaches the batched decoder."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15: the frame header
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def to_model_images(paths: list[str], size: int = SIZE) -> list[Optional[torch.Tensor]]:
    """`to_model_image` for many files (None where one is not a readable image), with a fast path.

    Data sets such as CIFAR-10 are stored at model size already: a size x size three-channel JPEG without
    EXIF needs no orientation, colour conversion, squaring or resize, so a batched libjpeg decode
    gives exactly the pixels `to_model_image` gives (the same libjpeg-turbo, no resampling) at a
    fraction of the per-file cost. Everything else takes the full path. Releases the GIL while
    decoding, so callers can spread chunks over threads.
    """
    raw: list[Optional[bytes]] = []
    for p in paths:
        try:
            raw.append(_read_bytes(p))
        except (ImageError, OSError):
            raw.append(None)
    fast = [i for i, b in enumerate(raw) if b is not None and b[:3] == b"\xff\xd8\xff" and b"Exif" not in b[:4096]
            and jpeg_size(b) == (size, size)]
    out: list[Optional[torch.Tensor]] = [None] * len(paths)
    for i, t in zip(fast, _decode_jpegs([raw[i] for i in fast])):  # type: ignore[misc]
        if t is not None and t.dtype == torch.uint8 and tuple(t.shape) == (3, size, size):
            out[i] = t.contiguous()
    for i, b in enumerate(raw):
        if out[i] is None and b is not None:
            try:
                out[i] = to_model_image(b, size=size)
            except ImageError:
                pass
    return out


# Ink when cropping a digit to its strokes (paper 255, darkest ink 0): low enough to keep the
# faint edges of the strokes, which the set's enlarged 8x8 digits all have (measured on held-out
# digits in four styles; docs/reliability.md).
INK_LEVEL = 240


def as_digit(source: ImageSource, size: int = SIZE) -> Image.Image:
    """A picture of one digit drawn the way the digits set is: dark ink on white paper, the ink
    filling the square's height (or width, turned) as the set's 8x8 digits fill theirs. Light-on-dark
    digits (MNIST, chalk, a white pen on black) are inverted, judged by the border, which is paper
    in any drawing; a small digit on a big canvas is cropped to its ink. The area-averaging
    reduction keeps thin strokes, as the set's 4x4 block counts did."""
    gray = np.asarray(open_image(source, draft_size=8 * size).convert("L"), dtype=np.float64)
    ring = max(1, min(gray.shape) // 16)
    border = np.concatenate([gray[:ring].ravel(), gray[-ring:].ravel(), gray[:, :ring].ravel(), gray[:, -ring:].ravel()])
    if np.median(border) < 128:
        gray, border = 255.0 - gray, 255.0 - border
    paper, ink = float(np.median(border)), float(gray.min())
    if paper - ink < 16:  # no ink to speak of: nothing to frame
        return Image.new("RGB", (size, size), "white")
    gray = np.clip((gray - ink) / (paper - ink), 0.0, 1.0) * 255.0
    rows, cols = np.nonzero(gray < INK_LEVEL)
    gray = gray[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    side = max(gray.shape)
    square = np.full((side, side), 255.0)
    top, left = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    square[top: top + gray.shape[0], left: left + gray.shape[1]] = gray
    small = np.asarray(Image.fromarray(square.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BOX))
    lo = float(small.min())  # the darkest pixel is full ink, as the set's darkest blocks are
    small = np.clip((small - lo) / max(255.0 - lo, 1.0), 0.0, 1.0) * 255.0
    return Image.fromarray(small.round().astype(np.uint8)).convert("RGB")


def write_png(img: Image.Image, folder: str | os.PathLike) -> str:
    """Save `img` as `folder/<sha256 of the bytes>.png` and return the path. Written to a temporary
    name and renamed, so a file being read (served to a browser) is never rewritten in place; the
    same picture from many requests at once lands on one complete file."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    if not path.is_file():
        fd, tmp = tempfile.mkstemp(prefix=".png.", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return str(path)


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """uint8 (3,H,W) tensor -> PIL image, optionally enlarged with nearest-neighbour for display."""
    arr = image.detach().to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr, mode="RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
