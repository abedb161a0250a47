"""Losses against short hand-written references, and the seed's sign bug."""

import math
import re

import pytest
import torch

from ssl_core.losses import contrastive_loss, nt_xent_loss


def test_contrastive_matches_hand_computation():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.6, 0.8]])  # distances 5, 0.5, 1.0
    same = torch.tensor([1.0, 0.0, 0.0])
    # same pair: d^2 = 25; different pairs: max(0, 1 - d)^2 = 0.25 and 0
    expected = (25.0 + 0.25 + 0.0) / 3
    assert contrastive_loss(a, b, same, margin=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_pulls_same_and_pushes_different():
    """The convention: a same-class pair far apart costs more than one close together, and a
    different-class pair close together costs more than one beyond the margin (the seed had both
    the other way round)."""
    origin = torch.zeros(1, 2)
    near, far = torch.tensor([[0.1, 0.0]]), torch.tensor([[2.0, 0.0]])
    same, diff = torch.ones(1), torch.zeros(1)
    assert contrastive_loss(origin, far, same) > contrastive_loss(origin, near, same)
    assert contrastive_loss(origin, near, diff) > contrastive_loss(origin, far, diff)
    assert contrastive_loss(origin, far, diff).item() == 0.0


def test_contrastive_gradient_moves_same_pair_together():
    a = torch.zeros(1, 2)
    b = torch.tensor([[1.0, 0.0]], requires_grad=True)
    contrastive_loss(a, b, torch.ones(1)).backward()
    assert b.grad[0, 0] > 0  # gradient descent decreases b_x: towards a


@pytest.mark.parametrize("bad", [
    dict(a=torch.zeros(3, 2), b=torch.zeros(2, 2), same=torch.zeros(3)),
    dict(a=torch.zeros(3, 2), b=torch.zeros(3, 2), same=torch.zeros(2)),
    dict(a=torch.zeros(3), b=torch.zeros(3), same=torch.zeros(3)),
])
def test_contrastive_validates_shapes(bad):
    with pytest.raises(ValueError):
        contrastive_loss(**bad)


def test_nt_xent_matches_reference():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    t = 0.5
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(8):
        j = (i + 4) % 8
        sims = [math.exp(float(z[i] @ z[k]) / t) for k in range(8) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / sum(sims))
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(total / 8, rel=1e-5)


def test_nt_xent_low_for_matching_views_high_for_random():
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    assert nt_xent_loss(z, z + 0.01 * torch.randn_like(z), 0.1) < nt_xent_loss(z, torch.randn(16, 32), 0.1)


def test_nt_xent_validates():
    with pytest.raises(ValueError):
        nt_xent_loss(torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError):
        nt_xent_loss(torch.zeros(2, 4), torch.zeros(2, 4), temperature=0)


def test_supervised_nt_xent_matches_reference():
    """SupCon's L_out by hand: for each view, the mean over its same-class views of -log p."""
    torch.manual_seed(1)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 0, 2])
    t = 0.2
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    y = torch.cat([labels, labels])
    total = 0.0
    for i in range(8):
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(8) if k != i)
        pos = [j for j in range(8) if j != i and y[j] == y[i]]
        total += sum(-math.log(math.exp(float(z[i] @ z[j]) / t) / denom) for j in pos) / len(pos)
    assert nt_xent_loss(z1, z2, t, labels).item() == pytest.approx(total / 8, rel=1e-5)


def test_supervised_nt_xent_with_distinct_labels_is_simclr():
    torch.manual_seed(2)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert nt_xent_loss(z1, z2, 0.3, torch.arange(6)).item() == pytest.approx(nt_xent_loss(z1, z2, 0.3).item(), rel=1e-6)


def test_supervised_nt_xent_pulls_classes_together():
    """Same-class views clustered cost less than the same views with classes mixed up."""
    centres = torch.eye(4) * 3
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    z = centres[labels] + 0.05 * torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    shuffled = labels[torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])]
    assert nt_xent_loss(z, z, 0.2, labels) < nt_xent_loss(z, z, 0.2, shuffled)
    with pytest.raises(ValueError):
        nt_xent_loss(z, z, 0.2, labels[:3])


def test_contrastive_counts_a_near_same_pair_only_by_its_distance():
    """A same-class pair inside the margin costs d^2 alone (no push term), whatever type `same` has."""
    a, b = torch.zeros(2, 2), torch.tensor([[0.3, 0.4], [0.0, 0.6]])  # distances 0.5 and 0.6
    expected = (0.25 + 0.4 ** 2) / 2  # same pair: 0.5^2; different pair: (1 - 0.6)^2
    for same in (torch.tensor([1.0, 0.0]), torch.tensor([True, False]), torch.tensor([1, 0])):
        assert contrastive_loss(a, b, same).item() == pytest.approx(expected, rel=1e-5), same.dtype


def test_losses_keep_to_their_inputs_device_and_defaults():
    """On the `meta` device (shapes only) every tensor the losses make must follow their inputs, as
    on a GPU; and the documented defaults are the ones used."""
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 0, 1])
    assert nt_xent_loss(z1.to("meta"), z2.to("meta")).device.type == "meta"
    assert nt_xent_loss(z1.to("meta"), z2.to("meta"), labels=labels.to("meta")).device.type == "meta"
    assert nt_xent_loss(z1.to("meta"), z2.to("meta"), labels=labels).device.type == "meta"  # labels follow the views
    assert nt_xent_loss(z1, z2).item() == nt_xent_loss(z1, z2, temperature=0.5).item()
    same = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert contrastive_loss(z1, z2, same).item() == contrastive_loss(z1, z2, same, margin=1.0).item()
    assert nt_xent_loss(z1[:2], z2[:2]).item() > 0  # two images are enough


@pytest.mark.parametrize("call, message", [
    (lambda: contrastive_loss(torch.zeros(3, 2), torch.zeros(2, 2), torch.zeros(3)), "a and b must both be (B, D); got (3, 2) and (2, 2)"),
    (lambda: contrastive_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3)), "a and b must both be (B, D); got (3,) and (3,)"),
    (lambda: contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2)), "same must be (B,) = (3,); got (2,)"),
    (lambda: contrastive_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3), margin=0.0), "margin must be positive"),
    (lambda: nt_xent_loss(torch.zeros(3, 4), torch.zeros(2, 4)), "z1 and z2 must both be (B, D); got (3, 4) and (2, 4)"),
    (lambda: nt_xent_loss(torch.zeros(4), torch.zeros(4)), "z1 and z2 must both be (B, D); got (4,) and (4,)"),
    (lambda: nt_xent_loss(torch.zeros(1, 4), torch.zeros(1, 4)), "NT-Xent needs at least 2 images per batch"),
    (lambda: nt_xent_loss(torch.zeros(2, 4), torch.zeros(2, 4), temperature=0.0), "temperature must be positive"),
    (lambda: nt_xent_loss(torch.zeros(4, 2), torch.zeros(4, 2), labels=torch.zeros(3)), "labels must be (B,) = (4,); got (3,)"),
])
def test_losses_refuse_bad_arguments_saying_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
