"""Inference with the shipped checkpoints on held-out digits: rotation, pair distances, neighbours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_core import inference
from ssl_core.checkpoints import load_checkpoint
from ssl_core.evaluate import embed, knn_accuracy
from ssl_core.images import ImageError, to_pil


@pytest.fixture(scope="module")
def rotation_ckpt(shipped_checkpoints):
    return load_checkpoint(shipped_checkpoints / "digits-rotation")


@pytest.fixture(scope="module")
def siamese_ckpt(shipped_checkpoints):
    return load_checkpoint(shipped_checkpoints / "digits-siamese")


def test_predicts_the_turn_of_held_out_digits(rotation_ckpt, digits_split) -> None:
    test = digits_split.test
    right = 0
    for i in range(60):
        k = i % 4
        turned = to_pil(torch.rot90(test.images[i], k, (-2, -1)), scale=4)  # an upload: enlarged, as a PIL image
        p = inference.predict_rotation(rotation_ckpt.model, turned)
        assert set(p.probabilities) == set(inference.ANGLES)
        assert abs(sum(p.probabilities.values()) - 1) < 1e-4
        right += p.k == k and p.angle == inference.ANGLES[k]
    assert right / 60 >= 0.9


def test_upright_undoes_the_predicted_turn_and_guesses_follow_the_turns(rotation_ckpt, digits_split) -> None:
    digit = digits_split.test.images[0]
    upload = to_pil(torch.rot90(digit, 1, (-2, -1)), scale=4)
    p = inference.predict_rotation(rotation_ckpt.model, upload)
    assert p.k == 1
    upright = np.asarray(p.upright.resize((32, 32), Image.Resampling.BOX))
    original = np.asarray(to_pil(digit))
    assert np.abs(upright.astype(int) - original.astype(int)).mean() < 10
    assert [g.turn for g in p.guesses] == [0, 1, 2, 3]
    assert all(g.predicted == (1 + g.turn) % 4 for g in p.guesses)
    assert torch.equal(p.guesses[0].image, p.model_input)


def test_bad_input_is_a_readable_image_error(rotation_ckpt) -> None:
    with pytest.raises(ImageError):
        inference.predict_rotation(rotation_ckpt.model, b"not an image at all")
    with pytest.raises(ValueError, match="rotation model"):
        inference.predict_rotation(load_checkpoint(rotation_ckpt.path.parent / "digits-siamese").model, Image.new("RGB", (8, 8)))


def test_same_class_pairs_are_closer_than_different(siamese_ckpt, digits_split) -> None:
    test = digits_split.test
    threshold = inference.card_threshold(siamese_ckpt)
    assert threshold is not None and threshold > 0
    by_class = {c: torch.nonzero(test.labels == c).flatten() for c in range(10)}
    same, diff = [], []
    for c in range(10):
        a, b = by_class[c][0], by_class[c][1]
        other = by_class[(c + 1) % 10][0]
        same.append(inference.compare_pair(siamese_ckpt.model, to_pil(test.images[a]), to_pil(test.images[b]), threshold).distance)
        r = inference.compare_pair(siamese_ckpt.model, to_pil(test.images[a]), to_pil(test.images[other]), threshold)
        diff.append(r.distance)
        assert r.same == (r.distance <= threshold)
    assert np.median(same) < np.median(diff)
    assert sum(d <= threshold for d in same) >= 8 and sum(d > threshold for d in diff) >= 8


def test_reference_is_the_held_out_split_and_neighbours_share_the_class(siamese_ckpt, digits_split) -> None:
    ref = inference.reference(siamese_ckpt, "test-siamese")
    assert torch.equal(ref.test.images, digits_split.test.images)
    assert ref.embeddings.shape == (len(digits_split.test), 128)
    query = digits_split.test.images[5]
    near = inference.nearest(ref, inference.embed_image(siamese_ckpt.model, to_pil(query)), k=5)
    assert near[0].index == 5 and near[0].distance < 1e-4  # the image itself, embedded the same way
    assert [n.distance for n in near] == sorted(n.distance for n in near)
    assert sum(n.class_name == ref.class_name(5) for n in near) >= 4


def test_random_init_model_is_the_runs_starting_point(siamese_ckpt, digits_split) -> None:
    """The untrained encoder shown beside the trained one reproduces the card's random-init probe."""
    model = inference.random_init_model(siamese_ckpt)
    tr, te = digits_split.train, digits_split.test
    acc = knn_accuracy(embed(model, tr.images), tr.labels, embed(model, te.images), te.labels)
    assert acc == pytest.approx(siamese_ckpt.card["metrics"]["knn_accuracy_random_init"], abs=1e-6)
