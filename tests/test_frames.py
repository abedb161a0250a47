"""Learning frames: recorded by the engine through on_event, saved beside the checkpoint, loaded
by name, a damaged file refused with a message, and the TensorBoard projector export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import separation
from ssl_core import frames
from ssl_core.registry import ModelRegistry
from ssl_core.runs import run_and_save
from ssl_core.train import TrainConfig


@pytest.fixture(scope="module")
def siamese_run(tmp_path_factory):
    """A 3-epoch digits siamese run saved to a checkpoint, with every event it emitted."""
    events: list = []
    out = tmp_path_factory.mktemp("runs") / "siamese-digits-frames"
    result, path = run_and_save(TrainConfig(task="siamese", dataset="digits", epochs=3), out, events.append)
    return result, path, events


def test_a_short_run_emits_frames_from_untrained_to_each_epoch(siamese_run) -> None:
    result, _, events = siamese_run
    emitted = [e.metrics["frame"] for e in events if e.kind == "frame"]
    assert emitted == result.frames and len(emitted) >= 4
    epochs = [f.epoch for f in emitted]
    assert epochs[0] == 0 and emitted[0].step == 0 and {1, 2, 3} <= set(epochs)
    assert any(0 < e < 1 for e in epochs), "a run shorter than 5 epochs gets frames within its epochs"
    assert epochs == sorted(epochs) and len(set(f.step for f in emitted)) == len(emitted)
    # Against frame 0, the untrained network: pairs separate (0.85 -> 0.98 measured) and neighbours agree more (0.91 -> 0.97).
    assert separation(emitted[-1].distances) >= separation(emitted[0].distances) + 0.05
    assert emitted[-1].knn_accuracy >= emitted[0].knn_accuracy + 0.02
    n = len(emitted[0].sample.rows)
    assert n == 359  # digits' whole test split is smaller than 100 per class: all of it
    for f in emitted:
        assert f.xy.shape == (n, 2) and np.abs(f.xy).max() <= 1.0 and 0 < f.seconds < 30
        assert f.method in ("pca", "tsne") and f.distances is not None
        d = f.distances
        assert len(d["edges"]) == frames.HIST_BINS + 1 and sum(d["same"]) + sum(d["different"]) == frames.HIST_PAIRS
        assert d["edges"][0] <= d["threshold"] <= d["edges"][-1]
    api = emitted[-1].to_dict()
    assert len(api["points"]) == n and api["points"][0][2] == int(emitted[0].sample.labels[0])
    # Smooth: consecutive frames are aligned, so points move less than between unrelated layouts.
    moved = np.median(np.linalg.norm(emitted[-1].xy - emitted[-2].xy, axis=1))
    assert moved < 0.3


def test_frames_are_saved_beside_the_checkpoint_and_load_by_name(siamese_run, shipped_checkpoints: Path) -> None:
    result, path, _ = siamese_run
    file = path / frames.FRAMES_FILE
    assert file.is_file() and file.stat().st_size < 1_000_000
    loaded = frames.load(path)
    assert [f.to_dict() for f in loaded] == [f.to_dict() for f in result.frames]
    registry = ModelRegistry(shipped_checkpoints, path.parent)
    assert [f.to_dict() for f in registry.learning_frames(path.name)] == [f.to_dict() for f in result.frames]


def test_a_damaged_frames_file_gives_a_clear_message(siamese_run, tmp_path: Path) -> None:
    _, path, _ = siamese_run
    broken = tmp_path / "broken"
    broken.mkdir()
    text = (path / frames.FRAMES_FILE).read_text()
    (broken / frames.FRAMES_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(frames.FramesError, match="broken/frames.json is damaged and cannot be replayed"):
        frames.load(broken)
    body = json.loads(text)
    body["frames"][1]["x"] = body["frames"][1]["x"][:5]
    (broken / frames.FRAMES_FILE).write_text(json.dumps(body))
    with pytest.raises(frames.FramesError, match="5 points for a sample of 359"):
        frames.load(broken)
    assert frames.load(tmp_path) == []  # no file: no frames, not an error


def test_rotation_frames_hold_the_table_of_turns(digits_split) -> None:
    import torch

    from ssl_core.data import Split
    from ssl_core.models import build_model

    torch.manual_seed(0)
    rec = frames.Recorder("rotation", Split(digits_split.train, digits_split.test), 10, torch.device("cpu"))
    f = rec.take(build_model("rotation"), 0, 0.0)
    table = np.asarray(f.confusion)
    assert table.shape == (4, 4) and (table.sum(axis=1) == len(rec.turns)).all()
    assert f.distances is None and f.epoch == 0


def test_leave_one_out_knn_matches_a_hand_count() -> None:
    import torch

    emb = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [0.15]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])  # the last point sits among class 0: it is the one miss
    assert frames.leave_one_out_knn(emb, labels, k=3) == pytest.approx(6 / 7)


def test_projector_export_for_the_held_out_sample(shipped_checkpoints: Path, tmp_path: Path) -> None:
    from ssl_core import replay

    registry = ModelRegistry(shipped_checkpoints, tmp_path / "runs")
    model = registry.load("digits-siamese")
    vectors, meta = replay.projector_files(model, tmp_path / "out")
    rows = vectors.read_text().splitlines()
    lines = meta.read_text().splitlines()
    assert len(rows) == 359 and all(len(r.split("\t")) == 128 for r in rows)
    assert lines[0] == "index\tclass" and len(lines) == 360
    index, name = lines[1].split("\t")
    from ssl_core.maps import reference

    ref = reference(model)
    assert name == ref.class_name(int(index))
    assert np.allclose([float(v) for v in rows[0].split("\t")], ref.embeddings[int(index)].numpy(), rtol=1e-4, atol=1e-5)


def test_a_shipped_cifar10_replay_shows_its_images_without_cifar10(shipped_checkpoints: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh Space CIFAR-10 is not there: the frames' 1,000 sample images come from the assets."""
    from ssl_core import replay

    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "empty"))  # CIFAR-10 is nowhere on this machine
    registry = ModelRegistry(shipped_checkpoints, tmp_path / "runs")
    model = registry.load("cifar10-rotation")
    shots = registry.learning_frames("cifar10-rotation")
    images = replay.sample_images(model, shots)
    assert images is not None and images.shape == (1000, 3, 32, 32)
    from safetensors.torch import load_file

    shipped = load_file(str(replay.FRAME_SAMPLES["cifar10"][0]))
    assert np.array_equal(shipped["rows"].numpy(), shots[0].sample.rows)
    assert np.array_equal(shipped["labels"].numpy(), shots[0].sample.labels)
    # Another run's rows (a different split) get no images rather than the wrong ones.
    other = shots[0].sample.rows.copy()
    other[0] += 1
    assert replay._shipped_frame_sample(model.card, other) is None


def test_a_set_of_many_classes_shows_ten_that_look_unlike_each_other() -> None:
    import torch

    from ssl_core.frames import DISTINCT_CLASSES, SHOWN_CLASSES, sample_rows, shown_classes

    names = [f"class {i}" for i in range(190)] + list(DISTINCT_CLASSES[:6]) + ["x", "y", "z", "w", "v", "u"]
    shown = shown_classes(names)
    assert len(shown) == SHOWN_CLASSES and len(set(shown)) == SHOWN_CLASSES and shown == sorted(shown)
    assert {names[i] for i in shown} >= set(DISTINCT_CLASSES[:6])  # the known distinct ones, then spread
    assert shown_classes(names[:7]) == list(range(7))  # few classes: all of them
    labels = torch.arange(len(names)).repeat_interleave(50)
    rows = sample_rows(labels, len(labels), class_names=names)
    assert set(labels[rows].tolist()) == set(shown) and len(rows) == 50 * SHOWN_CLASSES


def test_the_turn_table_of_models_whose_answers_are_known() -> None:
    """Held-out pictures with one bright corner, and models that answer from where it went (a turn
    of k quarter-turns counter-clockwise takes the top-left corner to the bottom-left for k = 1):
    one always right, one always a quarter-turn ahead, one that always says 90°. Rows are the turn
    applied, columns the turn answered, so each table is known without reading frames.py."""
    import torch

    from ssl_core.data import ImageSet, Split
    from ssl_core.models import ModelArgs, SSLModel

    class CornerReader(SSLModel):
        def __init__(self, answer) -> None:  # noqa: ANN001 - turn found -> turn answered
            super().__init__(ModelArgs(task="rotation", out_dim=4))
            self.answer = answer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            corners = [x[..., :4, :4], x[..., -4:, :4], x[..., -4:, -4:], x[..., :4, -4:]]  # where turn 0, 1, 2, 3 puts it
            found = torch.stack([c.mean(dim=(1, 2, 3)) for c in corners], 1).argmax(1)
            return torch.nn.functional.one_hot(self.answer(found), 4).float()

    images = torch.randint(0, 60, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, :, :4, :4] = 255
    labels = torch.arange(10).repeat(4)
    held = ImageSet(images, labels, [str(i) for i in range(10)], "corners")
    rec = frames.Recorder("rotation", Split(held, held), 10, torch.device("cpu"))
    n = len(rec.turns)
    assert n == 40
    right = rec.take(CornerReader(lambda k: k), 0, 0.0).confusion
    ahead = rec.take(CornerReader(lambda k: (k + 1) % 4), 1, 0.0).confusion
    ninety = rec.take(CornerReader(lambda k: torch.ones_like(k)), 2, 0.0).confusion
    assert right == [[n if j == i else 0 for j in range(4)] for i in range(4)]
    assert ahead == [[n if j == (i + 1) % 4 else 0 for j in range(4)] for i in range(4)]  # not symmetric: a transposed table fails
    assert ninety == [[0, n, 0, 0]] * 4


# ------------------------------------------------------------------------ the frames' math, by hand
def test_the_classes_a_map_shows_are_spread_evenly_after_the_distinct_ones() -> None:
    from ssl_core.frames import shown_classes

    assert shown_classes([f"c{i}" for i in range(20)]) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # 20 / 10 apart
    assert shown_classes([f"c{i}" for i in range(10)]) == list(range(10))
    names = [f"c{i}" for i in range(20)] + ["pizza", "teapot"]  # two known ones, at 20 and 21
    rest = [int(j * 2.5) for j in range(8)]  # 8 more from the other 20, 2.5 apart: 0, 2, 5, 7, 10, 12, 15, 17
    assert shown_classes(names) == sorted(rest + [20, 21])


def test_the_sample_takes_up_to_a_hundred_a_class_or_a_thousand_at_random() -> None:
    import torch

    from ssl_core.frames import SAMPLE_SIZE, sample_rows

    three = torch.arange(3).repeat_interleave(500)
    rows = sample_rows(three, len(three))
    assert torch.bincount(three[rows]).tolist() == [100, 100, 100] and torch.equal(rows, rows.sort().values)
    assert torch.equal(rows, sample_rows(three, len(three))) and not torch.equal(rows, sample_rows(three, len(three), seed=1))
    fifteen = torch.arange(15).repeat_interleave(80)  # 1000 // 15 = 66 a class
    assert torch.bincount(fifteen[sample_rows(fifteen, len(fifteen))]).tolist() == [66] * 15
    small = torch.tensor([0] * 5 + [1] * 200)
    assert torch.bincount(small[sample_rows(small, len(small))]).tolist() == [5, 100]  # all of a small class
    unlabeled = sample_rows(None, 5000)
    assert len(unlabeled) == SAMPLE_SIZE and len(set(unlabeled.tolist())) == SAMPLE_SIZE and unlabeled.max() < 5000
    assert torch.equal(unlabeled, unlabeled.sort().values) and torch.equal(sample_rows(None, 300), torch.arange(300))
    assert torch.equal(unlabeled, sample_rows(None, 5000))  # unlabeled too: every run shows the same images
    assert not torch.equal(unlabeled, sample_rows(None, 5000, seed=1))


def test_leave_one_out_knn_leaves_each_image_out_and_breaks_ties_to_the_lower_class() -> None:
    import torch

    emb = torch.tensor([[0.0], [1.1], [-1.2], [0.05]])
    labels = torch.tensor([1, 0, 1, 1])
    # k = 2, never itself. Image 0 (class 1): image 3 (class 1) and image 1 (class 0, 1.1 away; image
    # 2 is 1.2), a tie, to the lower class: wrong. Image 1 (class 0): images 3 and 0, class 1: wrong.
    # Image 2 (class 1): images 0 and 3: right. Image 3 (class 1): images 0 and 1, a tie: wrong.
    assert frames.leave_one_out_knn(emb, labels, k=2) == 0.25
    assert frames.leave_one_out_knn(emb, labels, k=1) == 0.75  # one neighbour: only image 1 is wrong
    three = torch.tensor([[0.0], [1.0], [-1.5]])  # k = 2 is everyone else: images 0 and 2 tie (to class 0), image 1 is outvoted
    assert frames.leave_one_out_knn(three, torch.tensor([1, 0, 1]), k=2) == 0.0
    assert frames.leave_one_out_knn(three, torch.tensor([1, 0, 1]), k=10) == 0.0  # k held to the others
    assert frames.leave_one_out_knn(three, torch.tensor([0, 1, 0]), k=10) == pytest.approx(2 / 3)  # the same ties, now to the right class
    assert frames.leave_one_out_knn(emb, labels) == frames.leave_one_out_knn(emb, labels, k=frames.KNN_K)


def test_positions_fill_one_box_with_one_scale_and_are_quantised() -> None:
    xy = np.stack([np.arange(200, dtype=np.float64), np.full(200, 5.0)], 1)  # x spread, y flat
    box = frames.to_box(xy)
    lo, hi = np.percentile(np.arange(200.0), [0.5, 99.5])  # 0.995 and 198.005: the middle 99%
    scale = (hi - lo) / 2
    assert box.dtype == np.float32 and box[0, 0] == -1.0 and box[199, 0] == 1.0  # the 0.5% ends are clipped
    assert box[50, 0] == pytest.approx(np.rint((50 - (lo + hi) / 2) / scale * 1000) / 1000) and box[50, 0] == pytest.approx(-0.503)
    assert (box[:, 1] == 0).all()  # the flat axis, on x's scale, is centred
    assert (frames.to_box(np.ones((10, 2))) == 0).all()  # nothing spread: all at the centre, no division by zero
    skewed = np.stack([np.r_[np.zeros(190), np.full(10, 100.0)], np.arange(200.0) / 1000], 1)
    assert frames.to_box(skewed)[:, 0].min() == -1.0 and frames.to_box(skewed)[:, 0].max() == 1.0


def test_pca_maps_the_two_widest_directions_and_turns_to_match_the_last_frame() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=(300, 3)) * [10.0, 3.0, 0.1]  # widest along x, then y
    emb = t @ np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])  # ...stored as features 2, 0, 1
    xy = frames.aligned_pca(emb, None)
    assert xy.shape == (300, 2)
    assert abs(np.corrcoef(xy[:, 0], t[:, 0])[0, 1]) > 0.999 and abs(np.corrcoef(xy[:, 1], t[:, 1])[0, 1]) > 0.999
    turned = xy @ np.array([[0.0, -1.0], [1.0, 0.0]])  # the last frame, a quarter-turn away
    assert np.allclose(frames.aligned_pca(emb, turned), turned, atol=1e-8)
    assert np.allclose(frames.aligned_pca(emb, xy * [-1, 1]), xy * [-1, 1], atol=1e-8)  # or mirrored
    assert np.allclose(frames.aligned_pca(emb + 50.0, None), xy, atol=1e-4)  # where the cloud sits does not matter
    line = frames.aligned_pca(np.arange(10.0)[:, None], None)  # one feature: the second axis is flat
    assert line.shape == (10, 2) and (line[:, 1] == 0).all()


def test_frames_are_due_before_the_first_step_and_within_short_runs() -> None:
    import torch

    from ssl_core.data import ImageSet, Split

    from ssl_core.models import build_model

    held = ImageSet(torch.zeros(12, 3, 32, 32, dtype=torch.uint8), torch.arange(3).repeat(4), ["a", "b", "c"], "flat")
    rec = frames.Recorder("rotation", Split(held, held), 30, torch.device("cpu"))
    assert rec.due(0, 50) and not rec.due(30, 50)  # a long run: the engine takes one each epoch end
    assert [s for s in range(1, 61) if rec.due(s, 4)] == [10, 20, 40, 50]  # a short one: thirds of each epoch
    assert rec.due(10, 4) and rec.due(10, 4.9) and not rec.due(10, 5)  # fewer than 5 epochs is short
    assert rec._epoch(60) == 2 and isinstance(rec._epoch(60), int) and rec._epoch(40) == 1.333
    rec.take(build_model("rotation"), 10, 0.0)
    assert not rec.due(10, 4)  # taken already at this step


def test_the_distance_histograms_of_a_model_whose_distances_are_known() -> None:
    """Pictures of three colours, embedded as their mean colour: same-colour pairs lie within the
    noise, different ones far apart. Every same-class pair falls in the bins below the threshold
    calibrated on training pairs, every different one above; the bins span 0 to the farthest pair."""
    import torch

    from ssl_core.data import Split
    from tests.test_evaluate import coloured, known_model

    held = coloured(40, 0)
    rec = frames.Recorder("siamese", Split(coloured(40, 1), held), 10, torch.device("cpu"))
    d = rec.take(known_model("siamese"), 0, 0.0).distances
    edges, same, different, threshold = np.array(d["edges"]), np.array(d["same"]), np.array(d["different"]), d["threshold"]
    assert len(edges) == frames.HIST_BINS + 1 and edges[0] == 0 and same.sum() + different.sum() == frames.HIST_PAIRS
    assert 0.4 < same.sum() / frames.HIST_PAIRS < 0.6 and separation(d) == 1.0
    below = edges[1:] <= threshold
    assert same[~below].sum() == 0 and different[below].sum() == 0 and same.sum() > 0 and different.sum() > 0
    with torch.no_grad():
        emb = known_model("siamese").embed(torch.stack([(img.float() / 127.5 - 1) for img in rec.images]))
    a, b, _ = rec.pairs
    farthest = float(torch.linalg.vector_norm(emb[a] - emb[b], dim=1).max())
    assert edges[-1] == pytest.approx(max(farthest, threshold) * 1.02, abs=2e-4)
    images, (ca, cb, csame) = rec.calibration
    with torch.no_grad():
        cal = known_model("siamese").embed(torch.stack([(img.float() / 127.5 - 1) for img in images]))
    gap = torch.linalg.vector_norm(cal[ca] - cal[cb], dim=1)
    # Calibrated on the training pairs: midway across their gap; numbers kept to 4 decimals
    assert threshold == round((float(gap[csame == 1].max()) + float(gap[csame == 0].min())) / 2, 4)
    assert (np.round(edges, 4) == edges).all()


def test_a_collapsed_encoder_still_gets_its_distance_histograms() -> None:
    """Every picture embedded at one point (a contrastive run can collapse): every distance and the
    threshold are 0, and all pairs land in the first bin instead of the histogram failing."""
    import torch

    from ssl_core.data import Split
    from tests.test_evaluate import coloured, known_model

    rec = frames.Recorder("siamese", Split(coloured(40, 1), coloured(40, 0)), 10, torch.device("cpu"))
    d = rec.take(known_model("siamese", head="zero"), 0, 0.0).distances
    assert d["threshold"] == 0.0 and len(d["edges"]) == frames.HIST_BINS + 1
    assert d["same"][0] + d["different"][0] == frames.HIST_PAIRS and d["same"][0] > 0 and d["different"][0] > 0
