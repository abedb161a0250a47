"""Losses for the contrastive tasks, with their conventions written down and checked.

Shapes: embeddings (B, D) float; pair labels (B,) with 1 = same class ("similar"), 0 = different.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Hadsell, Chopra & LeCun (2006): pull similar pairs together, push dissimilar beyond `margin`.

        L = mean( same * d^2 + (1 - same) * max(0, margin - d)^2 ),  d = ||a - b||_2

    `same` multiplies the pull term: swapping the two terms would push same-class pairs apart
    (tests/test_losses.py checks the direction).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must both be (B, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    if same.shape != a.shape[:1]:
        raise ValueError(f"same must be (B,) = {tuple(a.shape[:1])}; got {tuple(same.shape)}")
    if margin <= 0:
        raise ValueError("margin must be positive")
    same = same.to(a.dtype)
    d = F.pairwise_distance(a, b)
    return torch.mean(same * d.pow(2) + (1 - same) * torch.clamp(margin - d, min=0.0).pow(2))


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
                 labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over two views of the same B images, and with
    `labels` its supervised form (SupCon, Khosla et al. 2020, L_out).

    Each of the 2B views must pick out its positives among the other 2B-1 by cosine similarity /
    temperature. Without labels (SimCLR) its one positive is the other view of its image. With
    labels (B,) every view of the same class in the batch is a positive, and the loss averages
    -log p over them: every pair in the batch, pulled together or pushed apart, instead of one
    sampled pair per image. With one image per class it equals the label-free loss.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (B, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("NT-Xent needs at least 2 images per batch")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if labels is not None and labels.shape != z1.shape[:1]:
        raise ValueError(f"labels must be (B,) = {tuple(z1.shape[:1])}; got {tuple(labels.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is never its own positive
    if labels is None:
        targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
        return F.cross_entropy(logits, targets)
    y = torch.cat([labels, labels]).to(z.device)
    positive = y[:, None] == y[None, :]
    positive.fill_diagonal_(False)
    log_p = logits.log_softmax(1).masked_fill(~positive, 0.0)  # -inf on the diagonal never reaches the sum
    return -(log_p.sum(1) / positive.sum(1)).mean()
