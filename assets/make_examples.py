"""Regenerates assets/examples/*.png: held-out digits from scikit-learn's bundled set (one also
light-on-dark), two digits drawn here with PIL lines, photographs rendered here
(`render_photos.py`), and CIFAR-10 and Tiny ImageNet *test* images when the JPEG copies are given.
Run: python assets/make_examples.py [/path/to/cifar10-jpeg [/path/to/tiny-imagenet-jpeg]]"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from render_photos import photograph
from ssl_core.data import load_dataset, split
from ssl_core.images import to_model_image, to_pil

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
    light = ImageOps.invert(to_pil(torch.rot90(test_digit(test, 5), 2, (-2, -1)), scale=SCALE))  # MNIST-style
    light.save(OUT / "digit-5-light-on-dark-turned-180.png")
    drawn([[(30, 25), (98, 25), (55, 108)]]).save(OUT / "drawn-7-upright.png")
    drawn([[(70, 15), (28, 80), (100, 80)], [(78, 45), (78, 115)]]).rotate(90).save(OUT / "drawn-4-turned-90.png")


# (file name, CIFAR-10 test file, quarter-turns counter-clockwise)
CIFAR_EXAMPLES = [("cifar10-cat-turned-90", "test/cat/0300.jpg", 1), ("cifar10-ship-upright", "test/ship/0300.jpg", 0),
                  ("cifar10-horse-turned-180", "test/horse/0300.jpg", 2), ("cifar10-airplane-turned-270", "test/airplane/0300.jpg", 3),
                  ("cifar10-truck-turned-90", "test/truck/0300.jpg", 1), ("cifar10-cat-a", "test/cat/0301.jpg", 0),
                  ("cifar10-cat-b", "test/cat/0302.jpg", 0), ("cifar10-truck-a", "test/truck/0301.jpg", 0)]


def cifar_examples(root: Path) -> None:
    for name, rel, k in CIFAR_EXAMPLES:
        to_pil(torch.rot90(to_model_image(root / rel), k, (-2, -1)), scale=SCALE).save(OUT / f"{name}.png")


# Photographs of our own making (file name, scene, seed, quarter-turns counter-clockwise, crop box
# as shares of width and height or None): whole and cropped, turned as a phone held sideways would.
RENDERED_EXAMPLES = [("rendered-meadow-turned-90", "meadow", 0, 1, None), ("rendered-street-upright", "street", 0, 0, None),
                     ("rendered-seaside-turned-180", "seaside", 0, 2, None), ("rendered-mug-turned-270", "mug", 0, 3, None),
                     ("rendered-street-cropped-turned-90", "street", 1, 1, (0.1, 0.15, 0.65, 0.95)),
                     ("rendered-seaside-a", "seaside", 0, 0, None), ("rendered-seaside-b", "seaside", 1, 0, None)]


def rendered_examples() -> None:
    for name, scene, seed, k, box in RENDERED_EXAMPLES:
        img = photograph(scene, seed)
        if box:
            img = img.crop((int(box[0] * img.width), int(box[1] * img.height), int(box[2] * img.width), int(box[3] * img.height)))
        img.rotate(90 * k, expand=True).save(OUT / f"{name}.png")  # PIL turns counter-clockwise, as torch.rot90 here


# Tiny ImageNet test photos (file name, test file, quarter-turns counter-clockwise), shown at their
# 64 px enlarged 3x with nearest-neighbour, as the CIFAR-10 ones are.
PHOTO_EXAMPLES = [("photo-school-bus-turned-90", "test/school bus/val_1097.jpg", 1),
                  ("photo-monarch-upright", "test/monarch/{0}", 0), ("photo-king-penguin-turned-180", "test/king penguin/{0}", 2),
                  ("photo-school-bus-a", "test/school bus/val_1182.jpg", 0), ("photo-school-bus-b", "test/school bus/val_1815.jpg", 0),
                  ("photo-jellyfish-a", "test/jellyfish/{0}", 0)]


def photo_examples(root: Path) -> None:
    for name, rel, k in PHOTO_EXAMPLES:
        if "{0}" in rel:  # the class's first test photo by name
            rel = rel.format(sorted(p.name for p in (root / rel).parent.iterdir())[0])
        to_pil(torch.rot90(to_model_image(root / rel, size=64), k, (-2, -1)), scale=3).save(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
    rendered_examples()
    if len(sys.argv) > 1:
        cifar_examples(Path(sys.argv[1]))
    if len(sys.argv) > 2:
        photo_examples(Path(sys.argv[2]))
