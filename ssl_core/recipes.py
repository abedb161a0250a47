"""Recipes: the defaults for each kind of data and task, filled into every TrainConfig field left
None and so written on the card.

A dict of dicts, one entry per (kind of data, task), so a new hyper-parameter is one more key in
each entry (and one more TrainConfig field) and a tuned value changes in one place.
"""

from __future__ import annotations

# "digits" (8x8 ink drawings) was tuned to meet its floors within a minute; "photos" (CIFAR-10 and
# users' folders) follows RotNet and SimCLR for 32x32 photos, with epochs sized to about 30 minutes
# on 2 CPU cores (docs/benchmarks.md).
RECIPES: dict[str, dict[str, dict]] = {
    "digits": {
        "rotation": dict(arch="simple", epochs=20, batch_size=32, lr=1e-3, optimizer="adam", weight_decay=0.0,
                         warmup=0.0, max_shift=0.06, flip=False, crop_min_scale=0.35),
        "siamese": dict(arch="simple", epochs=12, batch_size=128, lr=1e-3, optimizer="adam", weight_decay=0.0,
                        warmup=0.0, max_shift=0.0, flip=False, crop_min_scale=0.35),
        "simclr": dict(arch="simple", epochs=20, batch_size=256, lr=2e-3, optimizer="adam", weight_decay=0.0,
                       warmup=0.0, max_shift=0.0, flip=False, crop_min_scale=0.35),
    },
    "photos": {
        "rotation": dict(arch="convnet", epochs=9, batch_size=128, lr=4e-3, optimizer="adam", weight_decay=5e-5,
                         warmup=0.05, max_shift=0.0625, flip=True, crop_min_scale=0.2),
        "siamese": dict(arch="convnet", epochs=10, batch_size=256, lr=4e-3, optimizer="adam", weight_decay=5e-5,
                        warmup=0.05, max_shift=0.125, flip=True, crop_min_scale=0.2),
        "simclr": dict(arch="convnet", epochs=12, batch_size=256, lr=4e-3, optimizer="adam", weight_decay=5e-5,
                       warmup=0.05, max_shift=0.0, flip=True, crop_min_scale=0.2),
    },
}


def kind_of(dataset: str) -> str:
    """Which recipe family a data set uses: digits (8x8 ink drawings) or photos (everything else)."""
    return "digits" if dataset == "digits" else "photos"


def recipe_for(dataset: str, task: str) -> dict:
    """A copy of the recipe for `task` on `dataset` (digits, cifar10, folder): safe to modify."""
    return dict(RECIPES[kind_of(dataset)][task])
