"""Measures how a non-square photo should become square for a rotation model (inference.PHOTO_FIT):
squash, centre crop or pad, each at the model's own image size (its card's `image_size`).

Two sets of photos the models never trained on:
- scikit-image's sample photos (large, with an unambiguous upright; pip install scikit-image, not
  needed by the app), each cut at several aspect ratios (square to 2:1, both orientations);
- with --tiny DIR, the held-out test photos of the Tiny ImageNet copy (64 px squares), cut the same
  way. They are small: a 2:1 cut of a 64-px photo is 64x32, so every fit but squash enlarges it.

Each cut is made square each way, at the model's size, and asked in all four turns; the score is
the share of turns named right from the single view, and by the app's answer (the vote over the
four turns, evaluate.vote_over_turns). A 90-degree turn commutes with each fit, so fitting the
upright cut and turning the result is the same as turning the cut first.
Run from the repository root: PYTHONPATH=. python assets/measure_photo_fit.py [checkpoint folder] [--tiny DIR] [--tiny-photos N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from ssl_core.checkpoints import load_checkpoint
from ssl_core.evaluate import rotation_accuracies
from ssl_core.images import FITS, to_model_image, to_pil

# Photos with an unambiguous upright; textures, micrographs and sky images are left out.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "motorcycle", "horse")
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5)  # width / height of the cut


def sample_photos() -> dict[str, Image.Image]:
    from skimage import data

    out = {}
    for name in PHOTOS:
        fn = {"motorcycle": lambda: data.stereo_motorcycle()[0]}.get(name, getattr(data, name, None))
        try:
            arr = np.asarray(fn())
        except Exception:  # noqa: BLE001 -- absent from this version, or a download the machine cannot make
            continue
        if arr.dtype == bool:
            arr = np.where(arr, 255, 0).astype(np.uint8)
        out[name] = Image.fromarray(arr).convert("RGB")
    return out


def cuts(img: Image.Image, aspects: tuple[float, ...] = ASPECTS) -> list[Image.Image]:
    """The largest centred cut of each aspect ratio."""
    w, h = img.size
    out = []
    for a in aspects:
        cw, ch = (w, int(w / a)) if w / h < a else (int(h * a), h)
        left, top = (w - cw) // 2, (h - ch) // 2
        out.append(img.crop((left, top, left + cw, top + ch)))
    return out


def tiny_test_photos(root: str, n: int, size: int) -> list[Image.Image]:
    from ssl_core.data import load_dataset

    data = load_dataset("folder", root, image_size=size, max_images=None)
    test = data.images[data.test_mask]
    picks = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n]
    return [to_pil(test[i]) for i in picks]


@torch.no_grad()
def score(model: torch.nn.Module, pieces: list[Image.Image], size: int) -> dict[str, tuple[float, float]]:
    """fit -> (single-view accuracy, vote accuracy) over all four turns of every piece."""
    return {fit: rotation_accuracies(model, torch.stack([to_model_image(p, fit=fit, size=size) for p in pieces]))
            for fit in FITS}


def report(label: str, scores: dict[str, tuple[float, float]], turns: int) -> None:
    print(f"{label} ({turns} turns):")
    for fit, (single, vote) in scores.items():
        print(f"  {fit:7s} single view {single:.3f}   vote over four turns {vote:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", default="checkpoints/cifar10-rotation")
    parser.add_argument("--tiny", help="the Tiny ImageNet copy: its test photos, cut at each aspect ratio")
    parser.add_argument("--tiny-photos", type=int, default=2000)
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    model, size = ckpt.model.eval(), ckpt.model.args.image_size
    m = ckpt.card["metrics"]
    print(f"{args.checkpoint} ({size} px): card rotation accuracy {m.get('rotation_accuracy')}, "
          f"vote {m.get('rotation_accuracy_vote')}")
    photos = sample_photos()
    pieces = [c for img in photos.values() for c in cuts(img)]
    report(f"scikit-image sample photos ({', '.join(photos)}) x {len(ASPECTS)} aspect ratios", score(model, pieces, size),
           4 * len(pieces))
    if args.tiny:
        non_square = ASPECTS[1:]  # a square cut is the same whichever fit
        pieces = [c for img in tiny_test_photos(args.tiny, args.tiny_photos, size) for c in cuts(img, non_square)]
        report(f"{args.tiny_photos} Tiny ImageNet test photos x {len(non_square)} non-square cuts", score(model, pieces, size),
               4 * len(pieces))


if __name__ == "__main__":
    main()
