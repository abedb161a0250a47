"""Writes assets/photos-test-sample.safetensors: the Tiny ImageNet test photos of the classes the
photo models' maps show (frames.shown_classes: ten of its 202 classes, chosen to look unlike each
other), at 64 px, with their rows in the copy's test split, the labels and all 202 class names.

The maps of a photo model draw exactly these photos (maps.MAP_PER_CLASS is more than a class has),
and so do its learning frames (frames.sample_rows takes up to 100 a class), so this one file lets a
fresh Space draw the photo models' maps, place uploads on them, find neighbours and replay the runs.

Run: python assets/make_photos_sample.py /path/to/tiny-imagenet-jpeg   (the folder holding train/ and test/)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent / "photos-test-sample.safetensors"
IMAGE_SIZE = 64


def main(root: str) -> None:
    from ssl_core.data import load_dataset, split
    from ssl_core.frames import sample_rows

    test = split(load_dataset("folder", root, max_images=None, image_size=IMAGE_SIZE), 0.2, 0).test
    rows = sample_rows(test.labels, len(test), class_names=test.class_names)
    save_file({"images": test.images[rows].contiguous(), "labels": test.labels[rows].contiguous(), "rows": rows},
              str(OUT), metadata={"class_names": json.dumps(test.class_names), "test_images": str(len(test)),
                                  "source": f"{test.source}: test photos of the classes the maps show"})
    print(f"wrote {OUT} ({len(rows)} photos of {len(set(test.labels[rows].tolist()))} classes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/data/tiny-imagenet-jpeg")
