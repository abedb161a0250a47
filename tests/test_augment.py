"""Batched augmentations: the rotation convention, pair balance, SimCLR views."""

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_core.augment import all_rotations, normalize, rotate_quarter, sample_pairs, shift_flip, simclr_views


def test_rotation_label_is_counter_clockwise_quarter_turns_like_pil():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    for k in range(4):
        ours = rotate_quarter(img, k).permute(1, 2, 0).numpy()
        theirs = np.asarray(pil.rotate(90 * k))  # PIL rotates counter-clockwise
        assert np.array_equal(ours, theirs), k


def test_all_rotations_layout():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    rotated, labels = all_rotations(x)
    assert rotated.shape == (20, 3, 32, 32)
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    for i in range(20):
        k, j = divmod(i, 5)
        assert torch.equal(rotated[i], torch.rot90(x[j], k, (-2, -1)))


def test_normalize_range():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    y = normalize(x)
    assert y.min().item() == -1.0 and y.max().item() == 1.0


def test_pairs_are_balanced_and_labelled_correctly():
    labels = torch.arange(10).repeat_interleave(50)
    gen = torch.Generator().manual_seed(0)
    anchors = torch.randint(0, 500, (4000,), generator=gen)
    partners, same = sample_pairs(labels, anchors, 0.5, gen)
    assert torch.equal(same, (labels[partners] == labels[anchors]).float())
    assert 0.46 < same.mean().item() < 0.54  # the seed's uniform pairing gives ~0.10


def test_pairs_with_unbalanced_classes_and_reproducible():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2])
    anchors = torch.arange(100)
    p1, s1 = sample_pairs(labels, anchors, 0.5, torch.Generator().manual_seed(3))
    p2, s2 = sample_pairs(labels, anchors, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(p1, p2) and torch.equal(s1, s2)
    assert ((p1 >= 0) & (p1 < 100)).all()
    assert torch.equal(s1, (labels[p1] == labels[anchors]).float())


def test_simclr_views_shape_range_and_randomness():
    x = torch.rand(8, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    v1, v2 = simclr_views(x, gen), simclr_views(x, gen)
    assert v1.shape == x.shape and v1.min() >= 0 and v1.max() <= 1
    assert not torch.allclose(v1, v2)
    # Same generator state, same views: runs are reproducible.
    again = simclr_views(x, torch.Generator().manual_seed(0))
    assert torch.allclose(v1, again)


def test_simclr_view_of_full_crop_without_jitter_is_identity_or_flip():
    # A smooth picture: a full-area crop (aspect ratio within 3/4..4/3) barely changes it.
    ramp = torch.linspace(0, 1, 32)
    x = (ramp.view(1, 1, 1, 32) * ramp.view(1, 1, 32, 1)).expand(4, 3, 32, 32).contiguous()
    v = simclr_views(x, torch.Generator().manual_seed(1), scale=(1.0, 1.0), flip=False, jitter=0.0, grayscale_p=0.0)
    assert (v - x).abs().mean() < 0.05


def test_shift_flip_keeps_content_and_zero_shift_is_identity():
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(shift_flip(x, torch.Generator().manual_seed(0), max_shift=0.0), x, atol=1e-5)
    flipped = shift_flip(x, torch.Generator().manual_seed(0), max_shift=0.0, flip=True)
    for i in range(4):
        assert torch.allclose(flipped[i], x[i], atol=1e-5) or torch.allclose(flipped[i], x[i].flip(-1), atol=1e-5)


def test_random_rotations_turn_each_image_by_its_label():
    from ssl_core.augment import random_rotations, rotate_quarter

    images = torch.arange(6 * 3 * 4 * 4, dtype=torch.float32).view(6, 3, 4, 4)
    turned, labels = random_rotations(images, torch.Generator().manual_seed(0))
    assert turned.shape == images.shape and labels.shape == (6,)
    for i in range(6):
        assert torch.equal(turned[i], rotate_quarter(images[i], int(labels[i])))
    _, many = random_rotations(torch.zeros(400, 1, 2, 2), torch.Generator().manual_seed(1))
    assert set(many.tolist()) == {0, 1, 2, 3}


# ------------------------------------------- the views' geometry, read back from a coordinate image
W = 32
CENTRES = (2 * torch.arange(W) + 1) / W - 1  # pixel centres in grid_sample's [-1, 1] (align_corners=False)


def coordinate_images(b: int) -> torch.Tensor:
    """Channel 0 holds each pixel's x as (x + 1) / 2, channel 1 its y, channel 2 a constant 0.5: a
    linear picture, so a bilinear warp's output gives back the warp (slope and offset) exactly."""
    x = ((CENTRES + 1) / 2).view(1, W).expand(W, W)
    return torch.stack([x, x.T, torch.full((W, W), 0.5)]).expand(b, 3, W, W).contiguous()


def read_warp(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sx, tx, sy, ty) per image such that input x = sx * output x + tx (likewise y), fitted on the
    middle half of the output, which every crop here maps inside the picture."""
    mid = slice(W // 4, 3 * W // 4)
    u = CENTRES[mid]
    fits = []
    for ch, along in ((0, out[:, 0, W // 2, mid]), (1, out[:, 1, mid, W // 2])):
        v = 2 * along - 1
        slope = ((v - v.mean(1, keepdim=True)) * (u - u.mean())).sum(1) / ((u - u.mean()) ** 2).sum()
        fits += [slope, v.mean(1) - slope * u.mean()]
    return fits[0], fits[1], fits[2], fits[3]


def test_simclr_crops_have_the_documented_areas_aspects_places_and_flips():
    n = 2000
    out = simclr_views(coordinate_images(n), torch.Generator().manual_seed(0), scale=(0.2, 0.5), jitter=0.0, grayscale_p=0.0)
    sx, tx, sy, ty = read_warp(out)
    area, log_ratio = sx.abs() * sy, torch.log(sx.abs() / sy)
    assert area.min() > 0.2 - 1e-3 and area.max() < 0.5 + 1e-3 and abs(area.mean() - 0.35) < 0.01  # uniform area
    assert abs((area < 0.275).float().mean() - 0.25) < 0.03
    bound = float(np.log(4 / 3))
    assert log_ratio.min() > -bound - 1e-3 and log_ratio.max() < bound + 1e-3  # aspect 3/4 .. 4/3, log-uniform
    assert log_ratio.min() < -bound + 0.01 and log_ratio.max() > bound - 0.01 and abs(log_ratio.mean()) < 0.02
    for t, s in ((tx, sx.abs()), (ty, sy)):  # the centre anywhere the crop stays inside the picture
        place = t / (1 - s)
        assert place.min() > -1 - 1e-3 and place.max() < 1 + 1e-3 and place.min() < -0.98 and place.max() > 0.98
        assert abs(place.mean()) < 0.05
    assert abs((sx < 0).float().mean() - 0.5) < 0.04  # mirrored half the time
    assert (sy > 0).all()  # never upside down
    plain = simclr_views(coordinate_images(200), torch.Generator().manual_seed(0), flip=False, jitter=0.0, grayscale_p=0.0)
    assert (read_warp(plain)[0] > 0).all()


def test_simclr_crops_never_reach_past_the_picture():
    """Areas near 1 at aspect 4/3 ask for a side over 1: it is held at the picture's own side."""
    out = simclr_views(coordinate_images(500), torch.Generator().manual_seed(1), scale=(0.9, 1.0), flip=False, jitter=0.0, grayscale_p=0.0)
    sx, tx, sy, ty = read_warp(out)
    assert sx.max() < 1 + 1e-4 and sy.max() < 1 + 1e-4 and (sx > 1 - 1e-4).any() and (sy > 1 - 1e-4).any()


def test_a_flat_picture_stays_flat_through_any_crop_shift_or_flip():
    """Edges are reflected (views) or replicated (shifts), never filled with black."""
    flat = torch.full((64, 3, 16, 16), 0.7)
    gen = torch.Generator().manual_seed(2)
    assert torch.allclose(simclr_views(flat, gen, jitter=0.0, grayscale_p=0.0), flat, atol=1e-5)
    assert torch.allclose(shift_flip(flat, gen, max_shift=0.25, flip=True), flat, atol=1e-5)


def test_simclr_defaults_are_the_documented_ones():
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    mine = simclr_views(x, torch.Generator().manual_seed(4))
    spelled = simclr_views(x, torch.Generator().manual_seed(4), scale=(0.35, 1.0), flip=True, jitter=0.4, grayscale_p=0.2)
    assert torch.equal(mine, spelled)


def test_simclr_grays_the_documented_share_and_jitters_only_when_asked():
    x = torch.rand(1000, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    gray = lambda v: (v.max(1).values - v.min(1).values).amax((-2, -1)) < 1e-6  # noqa: E731
    some = simclr_views(x, torch.Generator().manual_seed(6), jitter=0.0, grayscale_p=0.3)
    assert abs(gray(some).float().mean() - 0.3) < 0.04
    assert not gray(simclr_views(x, torch.Generator().manual_seed(6), jitter=0.0, grayscale_p=0.0)).any()
    assert gray(simclr_views(x, torch.Generator().manual_seed(6), jitter=0.0, grayscale_p=1.0)).all()
    # Without jitter a view only moves pixels: channel 2 of a coordinate image stays 0.5 exactly.
    c = simclr_views(coordinate_images(50), torch.Generator().manual_seed(7), jitter=0.0, grayscale_p=0.0)
    assert torch.allclose(c[:, 2], torch.full_like(c[:, 2], 0.5))
    jittered = simclr_views(coordinate_images(50), torch.Generator().manual_seed(7), jitter=0.5, grayscale_p=0.0)
    assert not torch.allclose(jittered[:, 2], torch.full_like(c[:, 2], 0.5))


def test_colour_jitter_against_a_hand_computation():
    """Brightness, then contrast about each image's mean luma (over all its pixels: rows and
    columns), then saturation about each pixel's luma, each by 1 + (2u - 1) * strength for the
    drawn u, computed here pixel by pixel on 2x2 pictures whose rows and columns differ."""
    from ssl_core.augment import colour_jitter

    x = torch.tensor([[[[0.2, 0.8], [0.5, 0.1]], [[0.4, 0.1], [0.9, 0.3]], [[0.6, 0.3], [0.2, 0.7]]],
                      [[[0.9, 0.5], [0.0, 0.4]], [[0.3, 0.5], [0.6, 0.1]], [[0.1, 0.5], [0.8, 0.2]]]])  # (2, 3, 2, 2)
    draws = iter([torch.tensor([1.0, 0.25]), torch.tensor([0.0, 0.75]), torch.tensor([0.5, 1.0])])
    s = 0.5
    got = colour_jitter(x, s, lambda b: next(draws))
    luma = lambda p: 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]  # noqa: E731
    u = [[1.0, 0.0, 0.5], [0.25, 0.75, 1.0]]
    places = [(r, c) for r in range(2) for c in range(2)]
    for i in range(2):
        f = [1 + (2 * v - 1) * s for v in u[i]]
        pixels = [[float(x[i, ch, r, c]) * f[0] for ch in range(3)] for r, c in places]
        mean = sum(luma(p) for p in pixels) / len(pixels)
        pixels = [[(v - mean) * f[1] + mean for v in p] for p in pixels]
        pixels = [[(v - luma(p)) * f[2] + luma(p) for v in p] for p in pixels]
        for (r, c), want in zip(places, pixels):
            assert got[i, :, r, c].tolist() == pytest.approx(want, abs=1e-6), (i, r, c)


def test_luma_weights_and_shape():
    from ssl_core.augment import _luma

    pure = torch.eye(3).view(3, 3, 1, 1)  # a red, a green and a blue picture of one pixel
    assert _luma(pure).flatten().tolist() == pytest.approx([0.299, 0.587, 0.114], abs=1e-6)
    assert _luma(torch.rand(2, 3, 4, 5)).shape == (2, 1, 4, 5)
    rgb = torch.tensor([[0.5, 0.2, 0.8], [1.0, 1.0, 1.0]]).view(2, 3, 1, 1)
    assert _luma(rgb).flatten().tolist() == pytest.approx([0.299 * 0.5 + 0.587 * 0.2 + 0.114 * 0.8, 1.0], abs=1e-6)
    assert _luma(rgb.to(torch.bfloat16)).dtype == torch.bfloat16 and _luma(rgb.double()).dtype == torch.float64


def test_shifts_are_uniform_independent_and_within_the_bound():
    n, m = 2000, 0.2
    out = shift_flip(coordinate_images(n), torch.Generator().manual_seed(8), max_shift=m, flip=True)
    sx, tx, sy, ty = read_warp(out)
    assert torch.allclose(sx.abs(), torch.ones(n), atol=1e-4) and torch.allclose(sy, torch.ones(n), atol=1e-4)
    for t in (tx, ty):  # a shift of up to m of the side: 2m in grid units, uniform
        assert t.min() > -2 * m - 1e-3 and t.max() < 2 * m + 1e-3 and t.min() < -2 * m + 0.01 and t.max() > 2 * m - 0.01
        assert abs(t.mean()) < 0.02
    assert abs(np.corrcoef(tx, ty)[0, 1]) < 0.1 and abs(np.corrcoef(tx, (sx < 0).float())[0, 1]) < 0.1
    assert abs((sx < 0).float().mean() - 0.5) < 0.04
    default = read_warp(shift_flip(coordinate_images(500), torch.Generator().manual_seed(9)))
    assert (default[0] > 0).all() and default[1].abs().max() < 0.25 + 1e-3 and default[1].abs().max() > 0.24


def test_augmentations_follow_their_inputs_device_dtype_and_generator():
    """On the `meta` device (shapes only) every tensor they make must follow their input, as on a
    GPU; dtypes are kept; a seeded generator alone decides the draws."""
    x = torch.rand(4, 3, 8, 8)
    meta = x.to("meta")
    assert all(t.device.type == "meta" for t in all_rotations(meta))
    assert simclr_views(meta, torch.Generator().manual_seed(0)).device.type == "meta"
    assert shift_flip(meta, torch.Generator().manual_seed(0), flip=True).device.type == "meta"
    for dt in (torch.float64, torch.bfloat16):
        assert simclr_views(x.to(dt), torch.Generator().manual_seed(0)).dtype == dt
        assert shift_flip(x.to(dt), torch.Generator().manual_seed(0)).dtype == dt
    from ssl_core.augment import random_rotations

    for f in (lambda g: random_rotations(x, g)[1], lambda g: shift_flip(x, g, flip=True), lambda g: simclr_views(x, g)):
        torch.manual_seed(0)
        a = f(torch.Generator().manual_seed(11))
        torch.manual_seed(1)  # the global generator must not matter
        assert torch.equal(a, f(torch.Generator().manual_seed(11)))


# ----------------------------------------------------------------------------------- pair sampling
def test_pairs_pick_other_classes_and_members_uniformly():
    """Unbalanced classes with a gap (no class 2) and a class of one: 'different' partners are
    spread evenly over the other present classes, every partner class's members evenly, and the
    class of one is reached too."""
    labels = torch.tensor([0] * 5 + [1] * 3 + [3] * 6 + [4])
    gen = torch.Generator().manual_seed(0)
    anchors = torch.zeros(30_000, dtype=torch.long)  # all of class 0
    partners, same = sample_pairs(labels, anchors, generator=gen)  # the default fraction: half
    assert abs(same.mean() - 0.5) < 0.015
    other = labels[partners[same == 0]]
    share = torch.bincount(other, minlength=5).float() / len(other)
    assert share[[0, 2]].tolist() == [0.0, 0.0] and (share[[1, 3, 4]] - 1 / 3).abs().max() < 0.015
    hits = torch.bincount(partners[labels[partners] == 0], minlength=len(labels))[:5].float()
    assert hits[0] == 0 and (hits[1:] / hits[1:].mean() - 1).abs().max() < 0.1  # never the anchor itself
    hits = torch.bincount(partners[labels[partners] == 3], minlength=len(labels))[labels == 3].float()
    assert (hits / hits.mean() - 1).abs().max() < 0.1
    anchors = torch.full((30_000,), 10)  # all of class 3, a class in the middle
    partners, same = sample_pairs(labels, anchors, generator=gen)
    members = torch.bincount(partners[same == 1], minlength=len(labels))[labels == 3].float()
    assert members[10 - 8] == 0 and (members[members > 0] / members[members > 0].mean() - 1).abs().max() < 0.1
    share = torch.bincount(labels[partners[same == 0]], minlength=5).float() / int((same == 0).sum())
    assert share[[2, 3]].tolist() == [0.0, 0.0] and (share[[0, 1, 4]] - 1 / 3).abs().max() < 0.015
    anchors = torch.full((2000,), 14)  # the class of one: its only same-class partner is itself
    partners, same = sample_pairs(labels, anchors, 0.5, gen)
    assert (partners[same == 1] == 14).all() and abs(same.mean() - 0.5) < 0.05


def test_pairs_of_two_classes_and_of_one():
    gen = torch.Generator().manual_seed(1)
    two = torch.tensor([0, 0, 1, 1])
    _, same = sample_pairs(two, torch.randint(0, 4, (4000,), generator=gen), 0.25, gen)
    assert abs(same.mean() - 0.25) < 0.03  # two classes still get 'different' pairs
    one = torch.tensor([3, 3, 3])
    partners, same = sample_pairs(one, torch.tensor([0, 1, 2, 0]), 0.0, gen)
    assert same.tolist() == [1.0] * 4 and set(partners.tolist()) <= {0, 1, 2}  # no other class: all same


def test_same_class_partner_is_never_the_anchor_itself():
    """Held-out pair metrics on a slice of ~10 images a class: a pair of an image with itself (distance 0)
    would be ~10% of the positives and lift ROC-AUC by a tenth of what the embedding misses."""
    labels = torch.arange(20).repeat_interleave(torch.randint(2, 12, (20,), generator=torch.Generator().manual_seed(0)))
    gen = torch.Generator().manual_seed(1)
    anchors = torch.randint(0, len(labels), (20_000,), generator=gen)
    partners, same = sample_pairs(labels[torch.randperm(len(labels), generator=gen)], anchors, generator=gen)
    assert same.sum() > 9000 and not (partners[same == 1] == anchors[same == 1]).any()
