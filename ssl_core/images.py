"""One way to turn any picture into what the models see: RGB, 32x32, uint8.

The digits set, user folders, uploads in the app and the CLI all go through `to_model_image`, so a
sketch uploaded in the browser is resized exactly as the training data was.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

SIZE = 32
# A 40-megapixel phone photo decodes fine; a crafted 1-gigapixel PNG of a few KB must not.
MAX_PIXELS = 64_000_000
MAX_BYTES = 30 * 1024 * 1024

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
    smaller than this on either side (a 24-megapixel photo: 0.02 s instead of 0.3 s).
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
                img.load()
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


def to_model_image(source: ImageSource) -> torch.Tensor:
    """Picture -> uint8 tensor (3, 32, 32), exactly as the training pipeline sees its data.

    The whole picture is squeezed to 32x32 (no crop) so nothing the user drew is cut off; PIL's
    reducing resize filters large photos properly instead of aliasing them.
    """
    # 8x the output side keeps the final reducing resize as sharp as from the full decode.
    img = open_image(source, draft_size=8 * SIZE)
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """uint8 (3,H,W) tensor -> PIL image, optionally enlarged with nearest-neighbour for display."""
    arr = image.detach().to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr, mode="RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
