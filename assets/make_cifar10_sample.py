"""Writes assets/cifar10-test-sample.safetensors: 2,000 CIFAR-10 *test* images (the first 200 files
of each class folder, sorted by name) as uint8 (N,3,32,32) + labels + class names, so the app can
draw CIFAR-10 maps and nearest neighbours on a machine without CIFAR-10 (a Space).

Also writes assets/cifar10-frame-sample.safetensors: the 1,000 test images every CIFAR-10 run's
learning frames show (frames.sample_rows of the official test split, the same for every run), with
their rows, so a shipped model's replay shows its images on such a machine too.

Run: python assets/make_cifar10_sample.py /path/to/cifar10-jpeg   (the folder holding test/<class>/)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ssl_core.images import to_model_image

OUT = Path(__file__).resolve().parent / "cifar10-test-sample.safetensors"
FRAME_OUT = Path(__file__).resolve().parent / "cifar10-frame-sample.safetensors"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_CLASS = 200


def main(root: str) -> None:
    test = Path(root) / "test"
    images, labels, files = [], [], []
    for label, name in enumerate(CLASSES):
        for f in sorted((test / name).iterdir())[:PER_CLASS]:
            images.append(to_model_image(f))
            labels.append(label)
            files.append(f"test/{name}/{f.name}")
    meta = {"class_names": json.dumps(CLASSES), "source": "CIFAR-10 test split (JPEG copy), first 200 files per class",
            "files": json.dumps(files)}
    save_file({"images": torch.stack(images), "labels": torch.tensor(labels, dtype=torch.int64)}, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({len(images)} images)")
    write_frame_sample(root)


def write_frame_sample(root: str) -> None:
    from ssl_core.data import load_dataset, split
    from ssl_core.frames import sample_rows

    test = split(load_dataset("cifar10", root), 0.2, 0).test  # the official split: fraction and seed unused
    rows = sample_rows(test.labels, len(test))
    save_file({"images": test.images[rows].contiguous(), "labels": test.labels[rows].contiguous(), "rows": rows},
              str(FRAME_OUT), metadata={"class_names": json.dumps(CLASSES),
                                        "source": "CIFAR-10 test split (JPEG copy), the learning frames' sample"})
    print(f"wrote {FRAME_OUT} ({len(rows)} images)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/data/cifar10-jpeg")
