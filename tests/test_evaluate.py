"""Evaluation helpers against simple known cases."""

import numpy as np
import pytest
import torch

from ssl_core.evaluate import calibrate_threshold, fixed_pairs, knn_accuracy, linear_probe_accuracy, pair_metrics


def test_threshold_separates_clean_distances():
    d = np.array([0.1, 0.2, 0.3, 1.0, 1.5, 2.0])
    same = np.array([1, 1, 1, 0, 0, 0])
    t = calibrate_threshold(d, same)
    assert 0.3 <= t < 1.0
    assert np.all((d <= t) == (same == 1))


def test_threshold_is_the_most_accurate_cut_midway_to_the_next_distance():
    """Distances 1..9, same-class flags 1 1 0 1 1 0 0 1 0 (5 same, 4 different). Calling the k nearest
    "same" gets k=5 right 7 of 9 (4 same + 3 different); every other cut gets at most 6. The
    threshold lies midway between the 5th and 6th distance. Weighting either kind of pair more
    moves the cut: to 2 (different pairs counted more) or 8 (same pairs counted more)."""
    d = np.arange(1.0, 10.0)
    assert calibrate_threshold(d, np.array([1, 1, 0, 1, 1, 0, 0, 1, 0])) == 5.5
    assert calibrate_threshold(np.array([1.0, 2.0, 4.0, 6.0]), np.array([1, 1, 0, 0])) == 3.0  # midway, not half the gap
    assert calibrate_threshold(np.array([1.0, 2.0, 4.0]), np.array([1, 1, 0])) == 3.0  # the next distance is the last one
    assert calibrate_threshold(np.array([1.0, 2.0, 4.0]), np.array([0, 1, 1])) == 4.0  # the cut past every pair: the farthest


def test_knn_and_pairs_on_perfect_clusters():
    labels = torch.arange(4).repeat_interleave(30)
    centres = torch.eye(4) * 10
    emb = centres[labels] + 0.1 * torch.randn(120, 4, generator=torch.Generator().manual_seed(0))
    assert knn_accuracy(emb, labels, emb, labels) == 1.0
    m = pair_metrics(emb, labels, emb, labels)
    assert m["pair_auc"] == 1.0 and m["pair_accuracy"] == 1.0 and 0.5 < m["threshold"] < 14


def test_fixed_pairs_are_fixed_and_balanced():
    labels = torch.arange(10).repeat_interleave(20)
    a1, b1, s1 = fixed_pairs(labels)
    a2, b2, s2 = fixed_pairs(labels)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and torch.equal(s1, s2)
    assert 0.45 < s1.mean() < 0.55
    assert torch.equal(torch.unique(a1), torch.arange(200))  # any image can be an anchor, the first too


def _classes_on_many_scales(n: int, noise: float = 1.0, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten noisy Gaussian classes in 32-d, moved `offset` from zero, each feature on its own scale
    from 1e-2 to 1e2 (standardisation matters)."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 32, generator=gen) * 1.5
    scale = torch.logspace(-2, 2, 32)
    y = torch.randint(0, 10, (n,), generator=gen)
    return (centres[y] + torch.randn(n, 32, generator=gen) * noise + offset) * scale, y


def test_linear_probe_matches_a_reference_logistic_regression():
    x, y = _classes_on_many_scales(3000)
    ours = linear_probe_accuracy(x[:2000], y[:2000], x[2000:], y[2000:])
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[:2000].numpy())
    ref = LogisticRegression(max_iter=2000).fit(scaler.transform(x[:2000].numpy()), y[:2000].numpy())
    reference = ref.score(scaler.transform(x[2000:].numpy()), y[2000:].numpy())
    assert reference > 0.5  # a task with something to learn, far above chance (0.1)
    assert abs(ours - reference) < 0.02, (ours, reference)


def test_linear_probe_reaches_the_one_minimum_of_its_regularised_loss():
    """The probe's loss (mean cross-entropy + PROBE_WEIGHT_DECAY * |W|^2 on standardised features) is
    strictly convex in W: scikit-learn's logistic regression with C = 1 / (2 n decay) has the same
    minimum, so both must give the same probabilities on held-out features, not only similar
    accuracy. Features sit far from zero (a probe that standardised training and test features
    differently would be far off) on scales 1e-2..1e2 (one spread for all features would change
    the penalty's minimum); 20 L-BFGS iterations stop 0.17 short of it."""
    from sklearn.linear_model import LogisticRegression

    from ssl_core.evaluate import PROBE_WEIGHT_DECAY, fit_linear_probe

    x, y = _classes_on_many_scales(2000, noise=2.0, offset=50.0)
    train_x, train_y, test_x = x[:1500], y[:1500], x[1500:]
    mean, std = train_x.mean(0), train_x.std(0)
    ref = LogisticRegression(C=1 / (2 * len(train_x) * PROBE_WEIGHT_DECAY), tol=1e-10, max_iter=10000)
    ref.fit(((train_x - mean) / std).numpy(), train_y.numpy())
    expected = ref.predict_proba(((test_x - mean) / std).numpy())
    ours = torch.softmax(fit_linear_probe(train_x, train_y, 10)(test_x), dim=1).numpy()
    assert np.abs(ours - expected).max() < 0.005, np.abs(ours - expected).max()


def test_linear_probe_at_chance_on_noise():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(2000, 16, generator=gen), torch.randint(0, 4, (2000,), generator=gen)
    assert linear_probe_accuracy(x[:1500], y[:1500], x[1500:], y[1500:]) < 0.35


def test_the_vote_turns_each_view_back_before_averaging():
    """Hand-made views: the picture is at 90°. Views 1-3 (turned 1-3 more) say 180°, 270°, 0° with
    confidence; view 0 alone wrongly says 0°. Turned back, all but one say 90°: the vote says 90°."""
    import torch

    from ssl_core.evaluate import vote_over_turns

    probs = torch.full((1, 4, 4), 0.02)
    probs[0, 0, 0] = 0.94  # view 0: 0°, wrong
    for j, said in ((1, 2), (2, 3), (3, 0)):
        probs[0, j, said] = 0.94  # view j sees the picture at (1 + j) % 4
    voted = vote_over_turns(probs)[0]
    assert int(voted.argmax()) == 1 and abs(float(voted.sum()) - float(probs[0].sum(1).mean())) < 1e-6
    assert abs(float(voted[1]) - (3 * 0.94 + 0.02) / 4) < 1e-6


def test_vote_accuracy_of_a_model_that_always_says_90_degrees():
    """A model that answers 90° whatever it sees: single views are right for one turn in four; the
    vote sees 90° from every view, turns each back by a different amount and ties (the first angle,
    0°, wins a tie), so it is right exactly for upright pictures: also one in four."""
    import torch

    from ssl_core.evaluate import rotation_accuracies

    class Always90(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for the evaluator to read

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.0, 5.0, 0.0, 0.0]).expand(len(x), 4) + 0 * self.anchor

    single, voted = rotation_accuracies(Always90(), torch.zeros(6, 3, 8, 8, dtype=torch.uint8))
    assert single == 0.25 and voted == 0.25


def test_shipped_photo_models_come_first_and_are_the_defaults(tmp_path):
    """Photo models answer uploads once shipped; until then the CIFAR-10 ones do."""
    import shutil

    from ssl_core.registry import ModelRegistry

    shipped = tmp_path / "checkpoints"
    src = __import__("pathlib").Path(__file__).resolve().parent.parent / "checkpoints"
    for name in ("cifar10-rotation", "digits-rotation"):
        shutil.copytree(src / name, shipped / name)
    reg = ModelRegistry(shipped, tmp_path / "runs")
    assert reg.default_name("rotation") == "cifar10-rotation"
    shutil.copytree(src / "digits-rotation", shipped / "photos-rotation")  # any rotation card, named as a photo model
    assert reg.default_name("rotation") == "photos-rotation"
    assert [e.name for e in reg.entries("rotation")][:3] == ["photos-rotation", "cifar10-rotation", "digits-rotation"]


def test_knn_fits_on_training_embeddings_and_scores_the_held_out_ones():
    """Test points that are not training points, counted by hand. 1-D: class 0 at 0, 1, 2 and
    class 1 at 2.5, 3, 3.5, 10; k = 5."""
    train = torch.tensor([[0.0], [1.0], [2.0], [2.5], [3.0], [3.5], [10.0]])
    train_y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    test = torch.tensor([[1.9], [0.2], [9.0], [2.6]])
    # 1.9: its nearest is 2.0 (class 0) but its 5 nearest are 2.0, 2.5, 1.0, 3.0, 3.5 -> class 1 by 3 to 2.
    # 0.2: 0, 1, 2, 2.5, 3 -> class 0 by 3 to 2. 9.0: 10, 3.5, 3, 2.5, 2 -> class 1 by 4 to 1.
    # 2.6: 2.5, 3, 2, 3.5, 1 -> class 1 by 3 to 2, and labelled 0: the one miss.
    test_y = torch.tensor([1, 0, 1, 0])
    assert knn_accuracy(train, train_y, test, test_y) == 0.75
    assert knn_accuracy(train, train_y, test, test_y, k=1) == 0.5  # 1.9 -> class 0 by its one nearest: a second miss
    assert knn_accuracy(test, test_y, train, train_y, k=1) != 0.75  # fitting on the other side answers otherwise


def test_the_pair_threshold_comes_from_training_pairs_and_is_judged_on_held_out_ones():
    """1-D embeddings. Training: class c at 100c (+-0.5), so the cut falls midway between same-class
    pairs (at most 1 apart) and different ones (99 or more): near 50. Held out: class c at 200c +- 30,
    so same-class pairs are 0 or 60 apart and different ones 140 or more. The order is perfect
    (ROC-AUC 1), yet at the training cut every same-class pair 60 apart is called different."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    train = (100.0 * labels + torch.rand(100, generator=gen) - 0.5)[:, None]
    side = torch.where(torch.arange(100) % 2 == 0, 30.0, -30.0)
    test = (200.0 * labels + side)[:, None]
    m = pair_metrics(train, labels, test, labels)
    assert 45 < m["threshold"] < 55
    a, b, same = fixed_pairs(labels, seed=4321)  # the held-out pairs pair_metrics draws
    d, s = (test[a] - test[b]).abs().flatten(), same.bool()
    assert set(d[s].tolist()) == {0.0, 60.0} and d[~s].min() >= 140  # the layout, as built
    expected = float((s & (d == 0)).sum() + (~s).sum()) / len(s)  # right: the near same pairs, all different ones
    assert m["pair_auc"] == pytest.approx(1.0) and m["pair_accuracy"] == pytest.approx(expected)
    assert 0.6 < expected < 0.9  # the training cut, not one fitted to the held-out pairs (which would score 1)


# ------------------------------------------------- the evaluator end to end, on models with known answers
class MeanColour(torch.nn.Module):
    """An encoder that needs no training: each picture's mean colour (3 features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def known_model(task: str, head: str = "identity"):  # noqa: ANN201
    """A model of `task` whose features are the mean colour; a siamese head that keeps them
    (`identity`) or forgets them (`zero`: every picture at the same place)."""
    from ssl_core.models import ModelArgs, SSLModel

    model = SSLModel(ModelArgs(task=task, feature_dim=3, out_dim=4 if task == "rotation" else 3))
    model.encoder = MeanColour()
    if task != "rotation":
        with torch.no_grad():
            model.head.weight.copy_(torch.eye(3) if head == "identity" else torch.zeros(3, 3))
            model.head.bias.zero_()
    return model.eval()


def coloured(n_per_class: int, seed: int, labeled: bool = True):  # noqa: ANN201
    """Pictures of three classes, each a colour (red, green, blue) with a little noise."""
    from ssl_core.data import ImageSet

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(n_per_class)
    base = torch.full((len(labels), 3, 8, 8), 40.0)
    base[torch.arange(len(labels)), labels] = 200.0
    images = (base + torch.randint(-20, 21, base.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
    return ImageSet(images, labels if labeled else None, ["red", "green", "blue"] if labeled else [], "colours")


def test_evaluate_reads_neighbours_off_the_embedding_and_the_probe_off_the_features():
    from ssl_core.evaluate import evaluate

    train, test = coloured(30, 0), coloured(10, 1)
    m = evaluate(known_model("siamese"), train, test, baseline=known_model("siamese", head="zero"))
    assert (m["test_images"], m["train_images"]) == (30, 90)
    assert m["knn_accuracy"] == 1.0 and m["pair_auc"] == 1.0 and m["pair_accuracy"] == 1.0 and m["linear_probe_accuracy"] == 1.0
    # The baseline's head puts every picture at one place: its neighbours and pairs are chance,
    # but the probe reads the encoder's features, which still hold the colour.
    assert m["knn_accuracy_random_init"] < 0.5 and m["pair_auc_random_init"] == 0.5
    assert m["linear_probe_accuracy_random_init"] == 1.0
    assert not {"pair_accuracy_random_init", "threshold_random_init", "rotation_accuracy"} & m.keys()
    assert "linear_probe_accuracy" in evaluate(known_model("simclr"), train, test) and "pair_auc" in evaluate(known_model("simclr"), train, test)
    unlabeled = evaluate(known_model("siamese"), coloured(5, 2, labeled=False), coloured(2, 3, labeled=False))
    assert unlabeled == {"test_images": 6, "train_images": 15, "note": "unlabeled data: kNN accuracy and pair metrics need class labels"}


def test_evaluate_a_rotation_model_that_answers_the_turn_it_sees():
    from ssl_core.evaluate import evaluate, rotation_accuracies

    class CornerReader(torch.nn.Module):
        """Says which corner the bright one went to: right for every turn of these pictures."""

        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            corners = [x[..., :2, :2], x[..., -2:, :2], x[..., -2:, -2:], x[..., :2, -2:]]
            return torch.stack([c.mean(dim=(1, 2, 3)) for c in corners], 1) + 0 * self.anchor

    images = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    images[:, :, :2, :2] = 255
    reader = CornerReader().train()
    assert rotation_accuracies(reader, images, batch_size=2) == (1.0, 1.0)  # batches of 2, 2 and 1
    assert reader.training  # the evaluator puts the model back as it found it
    rotation = known_model("rotation")
    rotation.forward = CornerReader().forward
    train, test = coloured(4, 0), coloured(2, 1)
    test.images[:] = 0
    test.images[:, :, :2, :2] = 255
    m = evaluate(rotation, train, test)
    assert m["rotation_accuracy"] == 1.0 and m["rotation_accuracy_vote"] == 1.0 and "pair_auc" not in m and "knn_accuracy" in m


def test_quick_probes_measure_what_the_live_curve_shows():
    from ssl_core.evaluate import QUICK_PROBE_IMAGES, _at_most, quick_probe

    train, test = coloured(30, 0), coloured(10, 1)
    assert quick_probe(known_model("siamese"), train, test, seed=0) == {"knn_accuracy": 1.0, "pair_auc": 1.0}
    assert set(quick_probe(known_model("simclr"), train, test, seed=0)) == {"knn_accuracy", "pair_auc"}
    assert quick_probe(known_model("siamese"), coloured(5, 2, labeled=False), coloured(2, 3, labeled=False), seed=0) == {}
    rotation = known_model("rotation")
    assert set(quick_probe(rotation, train, test, seed=0)) == {"rotation_accuracy"}
    many = coloured(QUICK_PROBE_IMAGES // 3 + 5, 4)
    picked = _at_most(many, seed=7)
    assert len(picked) == QUICK_PROBE_IMAGES and torch.equal(picked.images, _at_most(many, seed=7).images)
    assert not torch.equal(picked.images, _at_most(many, seed=8).images)
    assert {img.numpy().tobytes() for img in picked.images} <= {img.numpy().tobytes() for img in many.images}
    assert _at_most(train, seed=7) is train


def test_embed_batches_restores_the_mode_and_reads_features_or_the_embedding():
    from ssl_core.evaluate import embed

    model = known_model("siamese", head="zero").train()
    images = coloured(4, 0).images
    features = embed(model, images, batch_size=5, features=True)
    assert torch.allclose(features, MeanColour()(((images.float() / 127.5) - 1)), atol=1e-6)
    assert torch.equal(embed(model, images, batch_size=5, features=True), embed(model, images, batch_size=100, features=True))
    assert embed(model, images).abs().max() == 0  # the zero head: the embedding, not the features
    assert model.training and embed(model, images[:0]).shape == (0, 3)


def test_metrics_are_shown_as_their_table_says():
    from ssl_core.evaluate import format_metric

    assert format_metric("rotation_accuracy", 0.87715) == "87.7%" and format_metric("pair_auc", 0.95789) == "0.958"
    assert format_metric("not_a_metric", 0.5) == "50.0%"


def test_the_probe_copes_with_constant_features_and_classes_the_training_split_lacks():
    gen = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (300,), generator=gen)
    x = torch.cat([torch.nn.functional.one_hot(y, 3).float() * 5 + torch.randn(300, 3, generator=gen), torch.ones(300, 1)], 1)
    assert linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:]) > 0.95  # a constant column does no harm
    test_y = y[200:].clone()
    test_y[:10] = 3  # a class never seen in training: those ten are simply wrong
    assert linear_probe_accuracy(x[:200], y[:200], x[200:], test_y) == pytest.approx(
        linear_probe_accuracy(x[:200], y[:200], x[200:], y[200:]) - 0.1, abs=0.011)


def test_rotation_accuracy_counts_every_turn_of_every_image_once_in_any_batching():
    """A reader that finds the bright corner but says 0° when it is top-right (a turn of 270°):
    single views are right for 3 turns in 4, the vote (three views against one) for all of them;
    a blank picture (every corner alike) is read as 0°, right for 1 turn in 4 either way."""
    from ssl_core.evaluate import rotation_accuracies, rotation_accuracy

    class MostlyRight(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            corners = torch.stack([c.mean(dim=(1, 2, 3)) for c in
                                   (x[..., :2, :2], x[..., -2:, :2], x[..., -2:, -2:], x[..., :2, -2:])], 1)
            said = corners.argmax(1)
            said[said == 3] = 0
            return torch.nn.functional.one_hot(said, 4).float() + 0 * self.anchor

    images = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    images[:2, :, :2, :2] = 255  # two readable pictures, then three blank ones
    want = ((2 * 3 + 3 * 1) / 20, (2 * 4 + 3 * 1) / 20)
    for batch in (1, 2, 3, 512):
        assert rotation_accuracies(MostlyRight(), images, batch_size=batch) == pytest.approx(want), batch
    assert rotation_accuracy(MostlyRight(), images) == pytest.approx(want[0])  # single views, not the vote
    assert rotation_accuracies(MostlyRight(), images[:0]) == (0.0, 0.0)


def test_quick_probes_draw_their_images_by_seed_from_larger_sets():
    from ssl_core.evaluate import QUICK_PROBE_IMAGES, _at_most, quick_probe

    big = coloured(QUICK_PROBE_IMAGES // 3 + 10, 5)
    assert len(big) > QUICK_PROBE_IMAGES
    assert quick_probe(known_model("siamese"), big, big, seed=3) == {"knn_accuracy": 1.0, "pair_auc": 1.0}
    exact = big.subset(torch.arange(QUICK_PROBE_IMAGES))
    assert _at_most(exact, seed=3) is exact  # exactly the limit: taken whole, in its order
