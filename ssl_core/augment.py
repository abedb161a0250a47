"""Pure, batched tensor augmentations: one call transforms a whole batch, on whatever device it is.

A batch of any size is one handful of tensor ops (on the GPU when the data lives there), so the
training step never waits on per-image Python code.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

MEAN, STD = 0.5, 0.5  # pixels to [-1, 1], the scale every checkpoint was trained at


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float in [-1, 1], the network's input scale, laid out channels_last."""
    x = images.to(dtype).div_(255.0 * STD).sub_(MEAN / STD)
    return x.contiguous(memory_format=torch.channels_last)


def rotate_quarter(images: torch.Tensor, k: int) -> torch.Tensor:
    """Turn every image k quarter-turns counter-clockwise (the project's rotation-label convention)."""
    return torch.rot90(images, k, dims=(-2, -1))


def all_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image in all four rotations, as RotNet found best: (4B,C,H,W) and labels (4B,) in 0..3.

    Laid out rotation-major ([all at 0°], [all at 90°], ...) so label k is the k-th block.
    """
    b = images.shape[0]
    rotated = torch.cat([rotate_quarter(images, k) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(b)
    return rotated, labels


def random_rotations(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image in one random quarter-turn, as the seed trains: (B,C,H,W) and labels (B,) in 0..3.

    RotNet's all four turns per image (`all_rotations`) learn more per CPU-second on CIFAR-10
    (docs/benchmarks.md); this is the seed's recipe, kept for the time-to-accuracy comparison.
    """
    labels = torch.randint(0, 4, (images.shape[0],), generator=generator).to(images.device)
    turned = torch.empty_like(images)
    for k in range(4):
        mask = labels == k
        turned[mask] = rotate_quarter(images[mask], k)
    return turned, labels


def sample_pairs(
    labels: torch.Tensor,
    anchors: torch.Tensor,
    positive_fraction: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A partner for each anchor index: same class with probability `positive_fraction`, else another.

    Returns (partner indices, same-class flags as float 1/0). Uniform partners would give ~10%
    positives on ten balanced classes; balancing them is what lets the loss learn "same".
    A same-class partner is never the anchor itself (a pair of one image at distance 0 would rank
    above every other pair and inflate a held-out ROC-AUC by the share of such pairs, ~1/class size:
    10% on a slice of 10 photos a class). Works on any class sizes; only a class with one member
    pairs with itself (a trivially positive pair).
    """
    device = labels.device
    n_classes = int(labels.max().item()) + 1
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=n_classes)
    starts = torch.cumsum(counts, 0) - counts
    anchor_labels = labels[anchors]
    rand = lambda: torch.rand(len(anchors), generator=generator, device="cpu").to(device)  # noqa: E731
    want_same = rand() < positive_fraction
    present = torch.nonzero(counts > 0).flatten()
    if len(present) < 2:
        want_same = torch.ones_like(want_same)
    # A different class: a random present class, re-drawn where it hit the anchor's own class.
    other = present[(rand() * len(present)).long().clamp_max(len(present) - 1)]
    clash = other == anchor_labels
    shift = 1 + (rand() * max(1, len(present) - 1)).long()
    pos_in_present = torch.searchsorted(present, anchor_labels)
    other = torch.where(clash, present[(pos_in_present + shift) % len(present)], other)
    partner_class = torch.where(want_same, anchor_labels, other)
    # Same-class members other than the anchor: draw among count - 1 and step over the anchor's place.
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(labels), device=device)
    skip_self = (partner_class == anchor_labels) & (counts[partner_class] > 1)
    span = counts[partner_class] - skip_self.long()
    offset = (rand() * span).long().clamp_max(span - 1)
    offset = offset + (skip_self & (offset >= rank[anchors] - starts[anchor_labels])).long()
    partners = order[starts[partner_class] + offset]
    same = (labels[partners] == anchor_labels).float()
    return partners, same


def simclr_views(
    images: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    scale: tuple[float, float] = (0.35, 1.0),
    flip: bool = True,
    jitter: float = 0.4,
    grayscale_p: float = 0.2,
) -> torch.Tensor:
    """One random SimCLR view of each image: resized crop, flip, colour jitter, grayscale.

    `images` is float in [0,1] (B,3,H,W); returns the same shape. The crop and flip are one affine
    warp per image (grid_sample), so the whole batch costs a single kernel rather than B crops.
    """
    b, _, h, w = images.shape
    dev, dt = images.device, images.dtype

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(dev, dt)

    # Random resized crop: area fraction s, aspect ratio r in [3/4, 4/3] (log-uniform), random centre.
    area = scale[0] + (scale[1] - scale[0]) * rand(b)
    log_r = torch.log(torch.tensor(3 / 4)) + rand(b) * (torch.log(torch.tensor(4 / 3)) - torch.log(torch.tensor(3 / 4)))
    ratio = torch.exp(log_r.float()).to(dt)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (rand(b) * 2 - 1) * (1 - sx)
    ty = (rand(b) * 2 - 1) * (1 - sy)
    if flip:
        sx = torch.where(rand(b) < 0.5, -sx, sx)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter > 0:
        out = colour_jitter(out, jitter, rand)
    if grayscale_p > 0:
        gray = _luma(out).expand_as(out)
        out = torch.where((rand(b) < grayscale_p).view(b, 1, 1, 1), gray, out)
    return out.clamp_(0.0, 1.0)


def shift_flip(images: torch.Tensor, generator: Optional[torch.Generator] = None, max_shift: float = 0.125, flip: bool = False) -> torch.Tensor:
    """Random translation (up to `max_shift` of the side, edges replicated), optional left-right flip.

    A shift keeps "up" where it was, so a rotation label applied afterwards stays true. A flip is
    applied before the turn, so it keeps the label too; it suits photos, whose mirror images are
    just as natural, but not digits: a mirrored digit turned 90° looks like the digit turned 270°,
    and the two turns become hard to tell apart. Float (B,C,H,W) in, same shape out.
    """
    b = images.shape[0]
    dev, dt = images.device, images.dtype
    r = torch.rand(3, b, generator=generator).to(dev, dt)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0] = torch.where(r[0] < 0.5, -1.0, 1.0) if flip else 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = (r[1] * 2 - 1) * 2 * max_shift
    theta[:, 1, 2] = (r[2] * 2 - 1) * 2 * max_shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _luma(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def colour_jitter(x: torch.Tensor, strength: float, rand) -> torch.Tensor:  # noqa: ANN001
    """Brightness, contrast and saturation, each a per-image factor in [1-s, 1+s], applied at once."""
    b = x.shape[0]

    def factor() -> torch.Tensor:
        return (1 + (rand(b) * 2 - 1) * strength).view(b, 1, 1, 1)

    x = x * factor()
    mean = _luma(x).mean(dim=(-2, -1), keepdim=True)
    x = (x - mean) * factor() + mean
    gray = _luma(x)
    return (x - gray) * factor() + gray

