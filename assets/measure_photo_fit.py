"""Measures how a non-square photo should become square for the CIFAR-10 rotation model
(inference.PHOTO_FIT): squash, centre crop or pad, on photos outside CIFAR-10 (scikit-image's
sample photos: pip install scikit-image; not needed by the app).

Each photo is cut at several aspect ratios (square to 2:1, both orientations), turned by 0/90/180/270
degrees, and prepared each way; the score is the share of turns the model names right.
Run: python assets/measure_photo_fit.py [checkpoint folder]   (default checkpoints/cifar10-rotation)
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from PIL import Image

from ssl_core.augment import normalize
from ssl_core.checkpoints import load_checkpoint
from ssl_core.images import FITS, to_model_image

# Photos with an unambiguous upright; textures, micrographs and sky images are left out.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle", "cat", "horse")
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5)  # width / height of the cut


def photos() -> dict[str, Image.Image]:
    from skimage import data

    out = {}
    for name in PHOTOS:
        fn = {"motorcycle": lambda: data.stereo_motorcycle()[0], "cat": data.chelsea}.get(name, getattr(data, name, None))
        if fn is None:
            continue
        arr = np.asarray(fn())
        if arr.dtype == bool:
            arr = np.where(arr, 255, 0).astype(np.uint8)
        out[name] = Image.fromarray(arr).convert("RGB")
    out.pop("cat", None)  # the same photo as chelsea
    return out


def cuts(img: Image.Image) -> list[Image.Image]:
    """The largest centred cut of each aspect ratio."""
    w, h = img.size
    out = []
    for a in ASPECTS:
        cw, ch = (w, int(w / a)) if w / h < a else (int(h * a), h)
        left, top = (w - cw) // 2, (h - ch) // 2
        out.append(img.crop((left, top, left + cw, top + ch)))
    return out


@torch.no_grad()
def main(path: str) -> None:
    ckpt = load_checkpoint(path)
    print(f"{path}: card rotation accuracy {ckpt.card['metrics'].get('rotation_accuracy')}")
    right = {fit: [] for fit in FITS}
    per_photo = {}
    for name, img in photos().items():
        for cut in cuts(img):
            for k in range(4):
                turned = cut.rotate(90 * k, expand=True)
                for fit in FITS:
                    x = to_model_image(turned, fit=fit)
                    ok = int(ckpt.model(normalize(x[None])).argmax()) == k
                    right[fit].append(ok)
                    per_photo.setdefault((name, fit), []).append(ok)
    n = len(right["squash"])
    for fit in FITS:
        print(f"{fit:7s} {np.mean(right[fit]):.3f}  ({sum(right[fit])}/{n} turns)")
    for name in photos():
        print(name, " ".join(f"{fit} {np.mean(per_photo[(name, fit)]):.2f}" for fit in FITS))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/cifar10-rotation")
