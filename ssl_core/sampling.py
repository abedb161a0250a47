"""The order in which an epoch visits the training images.

Drawn at random, a batch of 256 from 202 classes holds about one other image of an anchor's class,
so the Siamese model's SupCon loss (every same-class view in the batch a positive) sees few
positives and learns little of what makes a class. Grouping the order in runs of `per_class`
images of one class (the "m per class" sampler of metric learning) puts that many of each class in
every batch while still visiting every image once an epoch.
"""

from __future__ import annotations

from typing import Optional

import torch


def epoch_order(n: int, gen: torch.Generator, labels: Optional[torch.Tensor] = None, per_class: int = 0) -> torch.Tensor:
    """A permutation of range(n) for one epoch, drawn from `gen`.

    per_class = 0 (or no labels): uniformly at random (`torch.randperm`, so runs without it keep
    their order). per_class = m: each class's images shuffled and cut into runs of m (the last run
    of a class may be shorter), the runs shuffled: consecutive batches hold about batch/m classes.
    """
    if not per_class or labels is None:
        return torch.randperm(n, generator=gen)
    labels = labels.cpu()
    runs: list[torch.Tensor] = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        runs.extend(members[torch.randperm(len(members), generator=gen)].split(per_class))
    shuffled = torch.randperm(len(runs), generator=gen).tolist()
    return torch.cat([runs[i] for i in shuffled])
