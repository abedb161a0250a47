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


# ------------------------------------------------------------ crafted sizes: refused before decoding
def huge_jpeg(width: int, height: int) -> bytes:
    """A crafted JPEG of a few hundred bytes whose frame header claims width x height: a decoder that
    trusts it allocates the whole picture (3 bytes a pixel) before it finds the data missing."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 90, 90)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5: sof + 7] = height.to_bytes(2, "big")
    data[sof + 7: sof + 9] = width.to_bytes(2, "big")
    assert images.jpeg_size(bytes(data)) == (width, height)  # the header says what we meant
    return bytes(data)


ROOT = Path(__file__).resolve().parent.parent


def peak_mb(code: str, *args: str) -> tuple[str, float]:
    """Run `code` in a fresh Python (ARGS = args) and return its stdout and the peak resident memory,
    in MB, that it added over the process after its imports (Linux's VmHWM, reset just before)."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak memory is read from Linux's /proc")
    prelude = (
        "import sys, torch\nfrom ssl_core import images, data, archive\nARGS = sys.argv[1:]\n"
        "def _mb(key):\n    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) / 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n_base = _mb('VmRSS')\n"
    )
    out = subprocess.run([sys.executable, "-c", prelude + code + "\nprint('PEAK', _mb('VmHWM') - _base)", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    *lines, last = out.stdout.strip().splitlines()
    return "\n".join(lines), float(last.split()[1])


def test_a_crafted_huge_jpeg_is_refused_from_its_header_on_every_path(tmp_path: Path) -> None:
    """70 megapixels claimed by a 300-byte file: refused before any decoder allocates the picture,
    whether it arrives alone (an upload) or among a data set's files (the batched fast path)."""
    crafted = huge_jpeg(10_000, 7_000)
    assert len(crafted) < 1000
    with pytest.raises(ImageError, match=r"10000x7000 \(70 megapixels\), over the 64-megapixel limit"):
        to_model_image(crafted)
    (tmp_path / "crafted.jpg").write_bytes(crafted)
    # A file claiming exactly the model size takes the batched decoder, the crafted one never does.
    paths = [str(tmp_path / "crafted.jpg")] * 8
    small = tmp_path / "small.jpg"
    small.write_bytes(encode(Image.new("RGB", (32, 32), (9, 99, 199)), "JPEG"))
    seen: list[Optional[tuple[int, int]]] = []
    real = images._decode_jpegs

    def spy(files: list[bytes]) -> list:
        seen.extend(images.jpeg_size(f) for f in files)
        return real(files)

    try:
        images._decode_jpegs = spy
        out = images.to_model_images(paths + [str(small)])
    finally:
        images._decode_jpegs = real
    assert out[:8] == [None] * 8 and out[8] is not None and seen == [(32, 32)]


def test_eight_crafted_jpegs_in_a_data_set_cost_no_memory(tmp_path: Path) -> None:
    """Measured in a fresh process: eight 70-megapixel JPEGs (real ones, 1.1 MB each, as a zip would
    carry) took 2.35 GB through the batched decoder before the header check; now they are refused
    unread. A 63-megapixel one, under the limit, is decoded at 1/8 scale."""
    real = encode(Image.new("RGB", (10_000, 7_000), (90, 90, 90)), "JPEG", quality=90)
    under = encode(Image.new("RGB", (9_000, 7_000), (90, 90, 90)), "JPEG", quality=90)
    for i in range(8):
        (tmp_path / f"{i}.jpg").write_bytes(real)
    (tmp_path / "under.jpg").write_bytes(under)
    files = [str(tmp_path / f"{i}.jpg") for i in range(8)] + [str(tmp_path / "under.jpg")]
    out, peak = peak_mb("r = images.to_model_images(ARGS)\nprint([x is None for x in r])", *files)
    assert out == str([True] * 8 + [False]), out
    assert peak < 100, f"{peak:.0f} MB"


@pytest.mark.parametrize("mode", list(mode_cases()))
def test_large_pictures_are_reduced_as_they_decode_and_keep_their_colours(mode: str) -> None:
    """Every mode at 5 megapixels (over images.SHRINK_PIXELS): reduced in its own mode right after
    decoding, it gives the colour the small picture gives, and the 16-bit range still fills 0..255."""
    img, rgb = mode_cases()[mode]
    big = img.resize((2500, 2000), Image.Resampling.NEAREST)
    try:
        data = encode(big, "PNG")
    except (OSError, KeyError):
        data = encode(big, "TIFF")
    shown = open_image(data)
    assert shown.width * shown.height <= images.SHRINK_PIXELS and abs(shown.width / shown.height - 1.25) < 0.01
    t = to_model_image(data)
    assert_model_image(t)
    if rgb is None:
        assert t.min() == 0 and t.max() == 255 and len(torch.unique(t)) > 4
    else:
        assert t[:, 16, 16].tolist() == list(rgb), mode


def test_a_large_picture_keeps_its_orientation_and_transparent_edges() -> None:
    # 3000x2000 stored sideways (EXIF 6), red on the stored left half: shown 2000x3000, red on top.
    arr = np.full((2000, 3000, 4), 255, dtype=np.uint8)
    arr[:, :1500, :3] = (255, 0, 0)
    arr[:, 2800:, 3] = 0  # a transparent strip, black under alpha 0, must come out white
    arr[:, 2800:, :3] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("PNG", "TIFF"):  # PNG keeps EXIF in a chunk; TIFF in tags a resized copy drops
        shown = open_image(encode(Image.fromarray(arr), fmt, exif=exif.tobytes()))
        assert shown.height > shown.width and shown.width * shown.height <= images.SHRINK_PIXELS, fmt
        # Turned clockwise: the stored left (red) is on top, the stored right edge (the strip) at the bottom.
        top, strip = shown.getpixel((shown.width // 2, 10)), shown.getpixel((shown.width // 2, shown.height - 10))
        assert top[1] < 30 and strip == (255, 255, 255), (fmt, top, strip)


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "P-transparent"])
def test_costly_modes_at_the_pixel_limit_stay_within_a_memory_bound(tmp_path: Path, mode: str) -> None:
    """63-megapixel PNGs of a few KB in the modes whose conversions cost most: they took ~1 GB each
    through them; reduced as they decode, ~0.6 GB at most (PIL holds RGBA as 4 bytes a pixel and
    resizes it premultiplied: two copies of the decoded picture)."""
    size = (9000, 7000)
    img = {"RGBA": Image.new("RGBA", size, (1, 2, 3, 100)), "I;16": Image.new("I;16", size, 1000),
           "P-transparent": Image.new("P", size, 1)}[mode]
    path = tmp_path / "big.png"
    img.save(path, transparency=1) if mode == "P-transparent" else img.save(path)
    assert path.stat().st_size < 300_000
    out, peak = peak_mb("print(tuple(images.to_model_image(ARGS[0]).shape))", str(path))
    assert out == "(3, 32, 32)" and peak < 700, f"{mode}: {peak:.0f} MB"


def test_large_decodes_take_turns(tmp_path: Path) -> None:
    """Two threads decoding 63-megapixel RGBA PNGs at once hold one picture's memory, not two."""
    Image.new("RGBA", (9000, 7000), (1, 2, 3, 100)).save(tmp_path / "big.png")
    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(2) as pool:\n    r = list(pool.map(images.to_model_image, ARGS * 2))\n"
            "print(len(r))")
    out, peak = peak_mb(code, str(tmp_path / "big.png"))
    assert out == "2" and peak < 700, f"{peak:.0f} MB"
