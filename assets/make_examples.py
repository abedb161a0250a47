"""Regenerates assets/examples/*.png: held-out digits from scikit-learn's bundled set, and two
digits drawn here with PIL lines. Run: python assets/make_examples.py"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ssl_core.data import load_dataset, split
from ssl_core.images import to_pil

OUT = Path(__file__).resolve().parent / "examples"
SCALE = 4  # 32 -> 128 px, nearest-neighbour so the pixels stay what the model sees


def test_digit(test, label: int, nth: int = 0) -> torch.Tensor:
    idx = torch.nonzero(test.labels == label).flatten()[nth]
    return test.images[idx]


def drawn(strokes: list[list[tuple[int, int]]], size: int = 128, width: int = 14) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for s in strokes:
        d.line(s, fill="black", width=width, joint="curve")
    return img


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    test = split(load_dataset("digits"), 0.2, 0).test  # held out: the shipped models never saw these
    # (file name, class, which one, quarter-turns counter-clockwise)
    for name, label, nth, k in [("digit-3-upright", 3, 0, 0), ("digit-7-turned-90", 7, 0, 1),
                                ("digit-2-turned-180", 2, 0, 2), ("digit-4-turned-270", 4, 0, 3),
                                ("digit-3-another", 3, 1, 0), ("digit-8", 8, 0, 0), ("digit-1", 1, 0, 0)]:
        to_pil(torch.rot90(test_digit(test, label, nth), k, (-2, -1)), scale=SCALE).save(OUT / f"{name}.png")
    drawn([[(30, 25), (98, 25), (55, 108)]]).save(OUT / "drawn-7-upright.png")
    drawn([[(70, 15), (28, 80), (100, 80)], [(78, 45), (78, 115)]]).rotate(90).save(OUT / "drawn-4-turned-90.png")


if __name__ == "__main__":
    main()
