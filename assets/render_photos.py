"""Photographs of our own making for the photo models' examples: scenes rendered with PIL (a
meadow with a tree, a seaside with a sailboat, a street of houses, a mug on a table), drawn at
twice the size and reduced so edges are smooth, then given a lens's softness, sensor noise and a
phone camera's JPEG round trip, at a phone's 4:3 shape. Nothing is downloaded; each scene is fixed
by its seed. Used by `assets/make_examples.py`; `python assets/render_photos.py DIR` writes them all.

Every scene has an up: sky above, ground below, things standing on it, light from above. That is
what a rotation model has to find, and what a visitor can check by eye.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 480, 360  # a phone photo's 4:3, small enough to ship
SS = 2  # drawn at twice the size, then reduced: anti-aliased edges


def _gradient(top: tuple[int, int, int], bottom: tuple[int, int, int], w: int, h: int) -> Image.Image:
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return Image.fromarray(np.broadcast_to(rows, (h, w, 3)).astype(np.uint8))


def _sky(w: int, h: int, rng: np.random.Generator, horizon: int) -> Image.Image:
    img = _gradient((70, 130, 205), (185, 215, 240), w, h)
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 5)):  # clouds: clusters of white ellipses
        cx, cy = rng.uniform(0, w), rng.uniform(0.08, 0.45) * horizon
        for _ in range(6):
            rx, ry = rng.uniform(30, 70) * SS, rng.uniform(12, 26) * SS
            x, y = cx + rng.uniform(-60, 60) * SS, cy + rng.uniform(-10, 10) * SS
            d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=(244, 246, 250))
    return img


def meadow(rng: np.random.Generator) -> Image.Image:
    w, h = WIDTH * SS, HEIGHT * SS
    horizon = int(h * rng.uniform(0.45, 0.55))
    img = _sky(w, h, rng, horizon)
    d = ImageDraw.Draw(img)
    sun = (rng.uniform(0.1, 0.9) * w, 0.15 * h)
    d.ellipse((sun[0] - 28 * SS, sun[1] - 28 * SS, sun[0] + 28 * SS, sun[1] + 28 * SS), fill=(255, 244, 200))
    freq, phase = rng.uniform(1, 3), rng.uniform(0, 6)
    hills = [(x, horizon + 25 * SS * np.sin(x / w * np.pi * freq + phase)) for x in range(0, w + 8, 8)]
    d.polygon(hills + [(w, h), (0, h)], fill=(88, 150, 70))
    img.paste(_gradient((96, 160, 72), (52, 104, 40), w, h - horizon - 30 * SS), (0, horizon + 30 * SS))
    for _ in range(rng.integers(1, 3)):  # trees: a trunk on the ground, a crown above it, lit from the top
        x, base = rng.uniform(0.15, 0.85) * w, rng.uniform(0.7, 0.85) * h
        th = rng.uniform(90, 140) * SS
        d.rectangle((x - 8 * SS, base - th, x + 8 * SS, base), fill=(96, 64, 36))
        r = rng.uniform(45, 65) * SS
        d.ellipse((x - r, base - th - r * 1.3, x + r, base - th + r * 0.7), fill=(40, 100, 40))
        d.ellipse((x - r * 0.6, base - th - r * 1.2, x + r * 0.5, base - th - r * 0.1), fill=(70, 140, 60))
        d.ellipse((x - r * 0.9, base - 6 * SS, x + r * 0.9, base + 6 * SS), fill=(50, 92, 38))  # its shadow
    return img


def seaside(rng: np.random.Generator) -> Image.Image:
    w, h = WIDTH * SS, HEIGHT * SS
    horizon = int(h * rng.uniform(0.4, 0.5))
    img = _sky(w, h, rng, horizon)
    img.paste(_gradient((40, 90, 140), (70, 140, 170), w, int(h * 0.72) - horizon), (0, horizon))
    d = ImageDraw.Draw(img)
    for y in range(horizon + 6 * SS, int(h * 0.72), 9 * SS):  # wave glints, denser near the shore
        for _ in range(6):
            x = rng.uniform(0, w)
            d.line((x, y, x + rng.uniform(10, 30) * SS, y), fill=(150, 195, 215), width=SS)
    phase = rng.uniform(0, 6)
    shore = [(x, h * 0.72 + 10 * SS * np.sin(x / w * 5 + phase)) for x in range(0, w + 8, 8)]
    d.polygon(shore + [(w, h), (0, h)], fill=(222, 200, 150))
    d.line(shore, fill=(245, 245, 240), width=5 * SS)  # surf
    x, y = rng.uniform(0.25, 0.75) * w, horizon + 28 * SS  # a sailboat on the water: hull below, sail up
    d.polygon([(x - 40 * SS, y), (x + 40 * SS, y), (x + 28 * SS, y + 14 * SS), (x - 28 * SS, y + 14 * SS)], fill=(120, 40, 30))
    d.line((x, y, x, y - 95 * SS), fill=(60, 50, 40), width=3 * SS)
    d.polygon([(x + 3 * SS, y - 92 * SS), (x + 3 * SS, y - 6 * SS), (x + 50 * SS, y - 6 * SS)], fill=(250, 250, 245))
    return img


def street(rng: np.random.Generator) -> Image.Image:
    w, h = WIDTH * SS, HEIGHT * SS
    ground = int(h * 0.68)
    img = _sky(w, h, rng, ground)
    d = ImageDraw.Draw(img)
    d.rectangle((0, ground, w, h), fill=(92, 92, 96))  # the road
    d.rectangle((0, ground, w, ground + 14 * SS), fill=(170, 168, 160))  # the pavement
    for x in range(0, w, 70 * SS):
        d.rectangle((x, int(h * 0.85), x + 38 * SS, int(h * 0.85) + 5 * SS), fill=(235, 235, 225))
    x = -rng.uniform(0, 40) * SS
    while x < w:  # houses standing on the pavement: walls, windows in rows, a pitched roof on top
        bw, bh = rng.uniform(90, 150) * SS, rng.uniform(110, 170) * SS
        colour = tuple(int(c) for c in rng.choice([(190, 120, 90), (220, 200, 160), (160, 170, 180), (200, 150, 120)]))
        d.rectangle((x, ground - bh, x + bw, ground), fill=colour)
        d.polygon([(x - 6 * SS, ground - bh), (x + bw / 2, ground - bh - 45 * SS), (x + bw + 6 * SS, ground - bh)], fill=(110, 50, 40))
        for wy in np.arange(ground - bh + 18 * SS, ground - 40 * SS, 42 * SS):
            for wx in np.arange(x + 14 * SS, x + bw - 28 * SS, 36 * SS):
                d.rectangle((wx, wy, wx + 20 * SS, wy + 26 * SS), fill=(60, 80, 110))
        d.rectangle((x + bw / 2 - 12 * SS, ground - 46 * SS, x + bw / 2 + 12 * SS, ground), fill=(80, 50, 35))  # door
        x += bw + rng.uniform(8, 20) * SS
    x = rng.uniform(0.2, 0.6) * w  # a car on the road: body on its wheels
    y = int(h * 0.8)
    d.rounded_rectangle((x, y - 34 * SS, x + 120 * SS, y), radius=8 * SS, fill=(180, 30, 30))
    d.rounded_rectangle((x + 24 * SS, y - 60 * SS, x + 92 * SS, y - 30 * SS), radius=10 * SS, fill=(160, 25, 25))
    d.rectangle((x + 32 * SS, y - 54 * SS, x + 84 * SS, y - 36 * SS), fill=(150, 190, 220))
    for cx in (x + 26 * SS, x + 94 * SS):
        d.ellipse((cx - 15 * SS, y - 15 * SS, cx + 15 * SS, y + 15 * SS), fill=(25, 25, 25))
    return img


def mug(rng: np.random.Generator) -> Image.Image:
    w, h = WIDTH * SS, HEIGHT * SS
    table = int(h * rng.uniform(0.55, 0.65))
    img = _gradient((232, 226, 214), (205, 198, 185), w, h)  # a wall, lit from above
    img.paste(_gradient((150, 100, 60), (110, 70, 40), w, h - table), (0, table))  # a wooden table
    d = ImageDraw.Draw(img)
    for y in range(table + 12 * SS, h, 22 * SS):
        d.line((0, y, w, y + rng.uniform(-6, 6) * SS), fill=(125, 82, 48), width=2 * SS)
    x, base = rng.uniform(0.3, 0.55) * w, table + 40 * SS
    mw, mh = 110 * SS, 130 * SS
    colour = tuple(int(c) for c in rng.choice([(40, 90, 160), (200, 60, 50), (240, 240, 235)]))
    d.ellipse((x - 20 * SS, base - 12 * SS, x + mw + 30 * SS, base + 14 * SS), fill=(95, 62, 36))  # shadow on the table
    d.ellipse((x + mw - 30 * SS, base - mh + 25 * SS, x + mw + 35 * SS, base - 35 * SS), outline=colour, width=14 * SS)  # handle
    d.rectangle((x, base - mh, x + mw, base), fill=colour)
    d.ellipse((x, base - 12 * SS, x + mw, base + 12 * SS), fill=colour)
    d.ellipse((x, base - mh - 12 * SS, x + mw, base - mh + 12 * SS), fill=tuple(max(0, c - 40) for c in colour))  # open top
    d.ellipse((x + 6 * SS, base - mh - 8 * SS, x + mw - 6 * SS, base - mh + 8 * SS), fill=(70, 40, 20))  # coffee
    for i in range(3):  # steam rising from it
        sx = x + mw * (0.3 + 0.2 * i)
        d.line([(sx + 8 * SS * np.sin(t / 9), base - mh - 20 * SS - t * SS) for t in range(0, 70, 5)], fill=(250, 250, 250), width=3 * SS)
    return img


SCENES: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "meadow": meadow, "seaside": seaside, "street": street, "mug": mug}


def photograph(scene: str, seed: int = 0) -> Image.Image:
    """The scene, upright, as a phone would save it: reduced from the drawing size, softened a
    little, with sensor noise and a JPEG round trip at quality 85."""
    rng = np.random.default_rng(seed)
    img = SCENES[scene](rng).resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.6))
    noisy = np.asarray(img, float) + rng.normal(0, 4.0, (HEIGHT, WIDTH, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for name in SCENES:
        for seed in (0, 1):
            photograph(name, seed).save(out / f"rendered-{name}-{seed}.png")
