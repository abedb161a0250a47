"""Uploads: whatever arrives, `to_model_image` returns a 32x32 RGB tensor or an ImageError a person can read."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from ssl_core import images
from ssl_core.images import ImageError, as_digit, fit_square, open_image, to_model_image, write_png


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def assert_model_image(t: torch.Tensor) -> None:
    assert t.dtype == torch.uint8 and tuple(t.shape) == (3, 32, 32)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bilevel_png(width: int, height: int) -> bytes:
    """A real, valid 1-bit PNG: all-zero rows deflate ~1000x, so hundreds of megapixels fit in KBs."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# ------------------------------------------------------------------------------ refused, with a message
@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "The file is empty"),
        (b"hello, this is a text file\n" * 10, "not an image"),
        (bytes(range(256)) * 4, "not an image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"\n  <svg><script>alert(1)</script></svg>", "SVG"),
    ],
    ids=["empty", "text", "binary-junk", "pdf", "svg", "svg-xml", "svg-script"],
)
def test_non_images_are_refused_with_a_message(tmp_path: Path, payload: bytes, message: str) -> None:
    (tmp_path / "upload.png").write_bytes(payload)
    for source in (payload, tmp_path / "upload.png", io.BytesIO(payload)):
        with pytest.raises(ImageError, match=message):
            to_model_image(source)


@pytest.mark.parametrize("fmt, cut", [("PNG", 0.5), ("PNG", 0.05), ("JPEG", 0.6), ("JPEG", 0.02), ("GIF", 0.5)])
def test_truncated_files_are_refused(fmt: str, cut: float) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    data = encode(img, fmt)
    with pytest.raises(ImageError, match="damaged or truncated|not an image"):
        to_model_image(data[: int(len(data) * cut)])
    assert_model_image(to_model_image(data))  # the whole file is fine: the cut is what is refused


def test_decompression_bomb_is_refused_fast_without_decoding() -> None:
    bomb = bilevel_png(20_000, 20_000)  # 400 megapixels: 1.2 GB as RGB
    assert len(bomb) < 100_000
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large|megapixel"):
        to_model_image(bomb)
    assert time.perf_counter() - start < 1.0


def test_images_over_our_pixel_limit_but_under_pils_are_refused() -> None:
    # 70 MP: under PIL's own bomb warning (89 MP), over the app's 64 MP limit.
    with pytest.raises(ImageError, match=r"10000x7000 \(70 megapixels\), over the 64-megapixel limit"):
        to_model_image(bilevel_png(10_000, 7_000))


def test_files_over_the_byte_limit_are_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:  # sparse: costs no disk and no time
        f.truncate(images.MAX_BYTES + 1)
    with pytest.raises(ImageError, match="over 30 MB"):
        to_model_image(big)
    with pytest.raises(ImageError, match="over 30 MB"):
        to_model_image(io.BytesIO(b"\x00" * (images.MAX_BYTES + 1)))


def test_missing_file_names_only_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="No such image file: gone.png$"):
        to_model_image(tmp_path / "gone.png")


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(ImageError, match="Could not read the array"):
        to_model_image(np.zeros((5, 5, 7), dtype=np.uint8))


# ------------------------------------------------------------------------------------- accepted
def test_one_pixel_image_fills_the_frame() -> None:
    t = to_model_image(encode(Image.new("RGB", (1, 1), (10, 200, 30))))
    assert_model_image(t)
    assert torch.equal(t, torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32))


def test_large_phone_photo_is_downscaled_quickly_not_refused() -> None:
    # 6000x4000 (24 MP) JPEG: left half red, right half blue, so the downscale can be checked.
    arr = np.zeros((4000, 6000, 3), dtype=np.uint8)
    arr[:, :3000, 0] = 220
    arr[:, 3000:, 2] = 220
    data = encode(Image.fromarray(arr), "JPEG", quality=90)
    to_model_image(data)  # warm up the codec
    start = time.perf_counter()
    t = to_model_image(data)
    took = time.perf_counter() - start
    assert_model_image(t)
    assert took < 0.5, f"a 24 MP photo took {took:.2f} s"
    left, right = t[:, :, :14].float().mean((1, 2)), t[:, :, 18:].float().mean((1, 2))
    assert left[0] > 200 and left[2] < 30 and right[2] > 200 and right[0] < 30


def mode_cases() -> dict[str, tuple[Image.Image, tuple[int, int, int]]]:
    """Each PIL mode an upload can have, as a flat image, with the RGB colour it must become."""
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p_transparent = p.copy()
    p_transparent.info["transparency"] = 1  # palette entry 1 (red) is see-through -> white
    i16 = Image.fromarray(np.tile(np.linspace(0, 65535, 8).astype(np.uint16), (8, 1)))
    return {
        "RGB": (Image.new("RGB", (8, 8), (1, 2, 3)), (1, 2, 3)),
        "RGBA-opaque": (Image.new("RGBA", (8, 8), (0, 128, 0, 255)), (0, 128, 0)),
        "RGBA-transparent": (Image.new("RGBA", (8, 8), (0, 0, 0, 0)), (255, 255, 255)),
        "LA-transparent": (Image.new("LA", (8, 8), (0, 0)), (255, 255, 255)),
        "LA-opaque": (Image.new("LA", (8, 8), (50, 255)), (50, 50, 50)),
        "P": (p, (255, 0, 0)),
        "P-transparency": (p_transparent, (255, 255, 255)),
        "L": (Image.new("L", (8, 8), 77), (77, 77, 77)),
        "1": (Image.new("1", (8, 8), 1), (255, 255, 255)),
        "CMYK-white": (Image.new("CMYK", (8, 8), (0, 0, 0, 0)), (255, 255, 255)),
        "CMYK-cyan": (Image.new("CMYK", (8, 8), (255, 0, 0, 0)), (0, 255, 255)),
        "I;16": (i16, None),  # a gradient: checked for range below
        "I": (Image.new("I", (8, 8), 70000), (0, 0, 0)),  # constant: no range to stretch
        "F": (Image.new("F", (8, 8), 0.5), (0, 0, 0)),
    }


@pytest.mark.parametrize("mode", list(mode_cases()))
def test_every_mode_becomes_rgb(mode: str) -> None:
    img, rgb = mode_cases()[mode]
    try:
        as_file = encode(img, "PNG")  # keeps palette transparency, LA, 16-bit
    except (OSError, KeyError):
        as_file = encode(img, "TIFF")  # CMYK, 32-bit int and float
    for source in (img, as_file):  # both as a PIL object and through a real file
        t = to_model_image(source)
        assert_model_image(t)
        if rgb is None:
            # 16-bit range 0..65535 is scaled to 0..255, not clipped to white.
            assert t.min() == 0 and t.max() == 255 and len(torch.unique(t)) > 4
        else:
            assert t[:, 16, 16].tolist() == list(rgb), mode


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "BMP", "JPEG"])
def test_common_file_formats_decode(fmt: str) -> None:
    img = Image.new("RGB", (40, 30), (250, 250, 250))
    t = to_model_image(encode(img if fmt != "GIF" else img.convert("P"), fmt))
    assert_model_image(t)
    assert t.float().mean() > 240


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    t = to_model_image(data)
    assert t[:, 8, 8].tolist() == [255, 0, 0]


# ------------------------------------------------------------------------------- EXIF orientation
def exif_photo(orientation: int, stored: Optional[Image.Image] = None) -> bytes:
    """A JPEG with an EXIF orientation tag; by default 40x20 stored sideways, red on the stored left half."""
    if stored is None:
        arr = np.full((20, 40, 3), 255, dtype=np.uint8)
        arr[:, :20] = (255, 0, 0)
        stored = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied_once_whichever_way_the_image_arrives(tmp_path: Path) -> None:
    data = exif_photo(6)  # 6 = "rotate 90 clockwise to display": stored 40x20 shows as 20x40
    (tmp_path / "phone.jpg").write_bytes(data)
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert shown.size == (20, 40)
    upright = open_image(data)
    assert upright.size == (20, 40)
    # Stored left half (red) is the displayed top half after a clockwise quarter-turn.
    assert upright.getpixel((10, 5))[1] < 60 and upright.getpixel((10, 35))[1] > 200
    # Bytes, a path, a file object, the PIL file, and the picture already turned upright by the
    # caller (Gradio's Image component does this) must all give the same model input.
    reference = to_model_image(data)
    sources = [tmp_path / "phone.jpg", io.BytesIO(data), Image.open(io.BytesIO(data)), shown, np.asarray(shown)]
    for source in sources:
        assert torch.equal(to_model_image(source), reference), type(source)


def test_orientation_1_and_missing_exif_leave_the_image_as_stored() -> None:
    assert open_image(exif_photo(1)).size == (40, 20)
    assert open_image(encode(Image.new("RGB", (40, 20)), "JPEG")).size == (40, 20)


def test_broken_exif_does_not_make_a_good_image_unusable() -> None:
    exif = Image.Exif()
    exif[0x0112] = 99  # not a valid orientation
    data = encode(Image.new("RGB", (40, 20), (9, 9, 9)), "JPEG", exif=exif.tobytes())
    assert open_image(data).size == (40, 20)


# ------------------------------------------------------------------ squaring, digits, outputs
def test_fit_square_squashes_crops_or_pads() -> None:
    wide = Image.new("RGB", (60, 20), (0, 0, 255))
    wide.paste((255, 0, 0), (20, 0, 40, 20))  # a red middle third
    assert fit_square(wide, "squash") is wide  # to_model_image stretches it whole
    crop = fit_square(wide, "crop")
    assert crop.size == (20, 20) and crop.getpixel((10, 10)) == (255, 0, 0) and crop.getpixel((0, 0)) == (255, 0, 0)
    pad = fit_square(wide, "pad")
    assert pad.size == (60, 60) and pad.getpixel((0, 0)) == (0, 0, 255)  # borders take the edge colour
    assert to_model_image(wide, fit="crop").shape == (3, 32, 32)
    with pytest.raises(ValueError, match="fit must be one of"):
        fit_square(wide, "stretch")


def test_as_digit_gives_dark_ink_on_white_framed_like_the_set_whatever_the_polarity() -> None:
    ink = Image.new("L", (200, 120), 255)
    ImageDraw.Draw(ink).line([(120, 30), (120, 90)], fill=0, width=6)  # a "1", small and off-centre
    chalk = ImageOps.invert(ink)
    a, b = np.asarray(as_digit(ink)), np.asarray(as_digit(chalk))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert a[0, 0].tolist() == [255, 255, 255] and a[16, 16].max() < 60  # paper white, ink dark in the middle
    rows = np.nonzero(a[..., 0].min(axis=1) < 128)[0]
    assert rows.min() <= 1 and rows.max() >= 30  # the ink fills the height, as the set's digits do
    assert np.asarray(as_digit(Image.new("RGB", (40, 40), "black"))).min() == 255  # no ink: blank paper


def test_write_png_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    first = write_png(img, tmp_path)
    before = os.stat(first)
    # The same picture again (another visitor, at once) names the same file and leaves it alone:
    # a file being served is never truncated and rewritten.
    assert write_png(img.copy(), tmp_path) == first and Path(first).suffix == ".png"
    after = os.stat(first)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert Image.open(first).getpixel((0, 0)) == (1, 2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(first).name]  # no temporary files left


def test_many_files_decode_exactly_as_one_at_a_time(tmp_path: Path) -> None:
    """`to_model_images` (data sets) takes a fast path for 32x32 JPEGs; every kind of file must still
    come out bit for bit as `to_model_image` (uploads) makes it, or None where it is no image."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    turned = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° to display": must be honoured, as for an upload
    Image.fromarray(rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)).resize((32, 32)).save(turned, "JPEG", exif=exif)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", (32, 32), 0))
    files = {
        "plain.jpg": encode(photo, "JPEG", quality=75),
        "gray.jpg": encode(photo.convert("L"), "JPEG"),
        "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG"),
        "big.jpg": encode(photo.resize((50, 40)), "JPEG"),
        "exif.jpg": turned.getvalue(),
        "plain.png": encode(photo),
        "clear.png": encode(rgba),
        "damaged.jpg": encode(photo, "JPEG")[:200],
        "text.jpg": b"not an image at all",
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    paths.append(str(tmp_path / "missing.jpg"))
    many = images.to_model_images(paths)
    for path, got in zip(paths, many):
        try:
            want: Optional[torch.Tensor] = to_model_image(path)
        except ImageError:
            want = None
        if want is None:
            assert got is None, path
        else:
            assert got is not None and torch.equal(got, want), path
    assert many[paths.index(str(tmp_path / "plain.jpg"))] is not None and many[-1] is None and many[-2] is None
