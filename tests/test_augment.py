"""Batched augmentations: the rotation convention, pair balance, SimCLR views."""

import numpy as np
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
