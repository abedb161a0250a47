"""Recipes: the defaults for each kind of data and task, filled into every TrainConfig field left
None and so written on the card.

A dict of dicts, one entry per (kind of data, task), so a new hyper-parameter is one more key in
each entry (and one more TrainConfig field) and a tuned value changes in one place.
"""

from __future__ import annotations

# "digits" (8x8 ink drawings) was tuned to meet its floors within a minute, with the seed's encoder
# and Hadsell's loss. "photos" (CIFAR-10 and users' folders) is what paid in time-to-accuracy on
# CIFAR-10 (docs/benchmarks.md, "Recipes"): the 4-stage convnet's pooled channels as features;
# rotation by Nesterov SGD with label smoothing (2 epochs: 0.736 -> 0.740, probe 0.59); Siamese by
# the batch-wide SupCon loss through an MLP projector (2 epochs: 5-NN 0.42 -> 0.55, probe 0.47 ->
# 0.65); SimCLR at temperature 0.1 through an MLP projector (3 epochs: 5-NN 0.42 -> 0.54).
_DIGITS = dict(arch="simple", optimizer="adam", weight_decay=0.0, warmup=0.0, flip=False, crop_min_scale=0.35,
               width=None, stem_stride=1, depth=1, pooled=False, head="linear", label_smoothing=0.0, turns=4, pair_loss="hadsell",
               schedule="cosine", temperature=0.5, per_class=0)
_PHOTOS = dict(arch="convnet", optimizer="adam", lr=4e-3, weight_decay=5e-5, warmup=0.05, flip=True, crop_min_scale=0.2,
               width=None, stem_stride=1, depth=1, pooled=True, head="mlp", label_smoothing=0.0, turns=4, pair_loss="supcon",
               schedule="cosine", temperature=0.1, max_shift=0.0, per_class=0)
RECIPES: dict[str, dict[str, dict]] = {
    "digits": {
        "rotation": dict(_DIGITS, epochs=20, batch_size=32, lr=1e-3, max_shift=0.06),
        "siamese": dict(_DIGITS, epochs=12, batch_size=128, lr=1e-3, max_shift=0.0),
        "simclr": dict(_DIGITS, epochs=20, batch_size=256, lr=2e-3, max_shift=0.0),
    },
    "photos": {
        "rotation": dict(_PHOTOS, epochs=9, batch_size=128, optimizer="sgd", lr=0.2, weight_decay=5e-4, max_shift=0.0625,
                         head="linear", label_smoothing=0.1),
        "siamese": dict(_PHOTOS, epochs=10, batch_size=256, crop_min_scale=0.35),
        "simclr": dict(_PHOTOS, epochs=12, batch_size=256),
    },
}

# The seed's recipe (shared/seed), for the time-to-accuracy comparison: the digits family (its
# SimpleCNN, Adam, Hadsell's loss on sampled pairs, balanced and the right way round) at batch 64
# and a constant 1e-3, with no augmentation and one random turn per image.
SEED = dict(_DIGITS, batch_size=64, lr=1e-3, max_shift=0.0, turns=1, schedule="constant")


def kind_of(dataset: str) -> str:
    """Which recipe family a data set uses: digits (8x8 ink drawings) or photos (everything else)."""
    return "digits" if dataset == "digits" else "photos"


def recipe_for(dataset: str, task: str) -> dict:
    """A copy of the recipe for `task` on `dataset` (digits, cifar10, folder): safe to modify."""
    return dict(RECIPES[kind_of(dataset)][task])


def seed_recipe(task: str) -> dict:
    """The seed's settings for `task` as TrainConfig fields (it has no label-free method)."""
    if task == "simclr":
        raise ValueError("the seed has no label-free (SimCLR) method")
    return dict(SEED)
