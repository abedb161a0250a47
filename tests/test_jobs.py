"""The registry of models on offer, the background job, and the runs folder, with real (short)
digits training."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from conftest import shipped_default, shipped_names
from ssl_core import cost
from ssl_core.jobs import MAX_LOSS_POINTS, TrainingJob
from ssl_core.registry import ModelError, ModelRegistry
from ssl_core.runs import prune_runs
from ssl_core.train import TrainConfig

SHIPPED = shipped_names()


@pytest.fixture
def registry(tmp_path: Path, shipped_checkpoints: Path) -> ModelRegistry:
    return ModelRegistry(shipped_checkpoints, tmp_path / "runs")


def test_registry_offers_every_shipped_model_and_its_defaults(registry: ModelRegistry, shipped_checkpoints: Path) -> None:
    assert registry.names() == SHIPPED
    for task in ("rotation", "siamese", "simclr"):
        default = registry.get(task)
        assert default.name == shipped_default(task) and default.checkpoint.path == shipped_checkpoints / shipped_default(task)
        assert default.card["task"] == task and default.note == "" and default.key == default.card["weights_sha256"]
        assert registry.load(task).name == default.name  # a bare task name means its default
        assert registry.names(task) == [n for n in SHIPPED if n.endswith(f"-{task}")]
    labels = dict((name, label) for label, name in registry.choices())
    assert "rotation on CIFAR-10" in labels["cifar10-rotation"] and "rotation accuracy" in labels["cifar10-rotation"]
    assert "siamese on digits" in labels["digits-siamese"] and "pair ROC-AUC" in labels["digits-siamese"]
    assert "simclr on CIFAR-10 · 5-NN accuracy 69.1%" in labels["cifar10-simclr"]  # what a label-free model is judged by
    with pytest.raises(ModelError, match=re.escape(f"Unknown model 'jigsaw'; choose one of: {', '.join(SHIPPED)} (")):
        registry.load("jigsaw")
    with pytest.raises(ModelError, match="digits-siamese is a siamese model; this needs a rotation model"):
        registry.load("digits-siamese", "rotation")


def test_a_damaged_run_falls_back_to_the_default(tmp_path: Path, shipped_checkpoints: Path) -> None:
    run = tmp_path / "runs" / "siamese-digits-x"
    shutil.copytree(shipped_checkpoints / "digits-siamese", run)
    reg = ModelRegistry(shipped_checkpoints, tmp_path / "runs")
    assert reg.names()[-1] == "siamese-digits-x" and reg.load("siamese-digits-x").checkpoint.path == run
    assert reg.get("siamese").name == shipped_default("siamese")  # a run never becomes the default
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fallback = ModelRegistry(shipped_checkpoints, tmp_path / "runs").load("siamese-digits-x")
    assert fallback.name == shipped_default("siamese")
    assert "siamese-digits-x could not be loaded" in fallback.note and f"using the shipped {fallback.name}" in fallback.note


def _wait_for(job: TrainingJob, condition, timeout: float = 60.0):  # noqa: ANN001, ANN202
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snap = job.snapshot()
        if condition(snap):
            return snap
        time.sleep(0.05)
    raise AssertionError(f"timed out; last state {job.snapshot().status}")


@pytest.mark.slow
def test_job_trains_saves_and_offers_the_run(registry: ModelRegistry) -> None:
    job = TrainingJob(registry)
    before = registry.get("siamese").checkpoint.path
    cfg = TrainConfig(task="siamese", dataset="digits", epochs=2)
    cost._rates.pop(cost._pace_key(cfg), None)
    ok, msg = job.start(cfg, who="test")
    assert ok and "siamese on digits" in msg
    assert job.wait(120)
    s = job.snapshot()
    assert s.status == "finished", s.log
    assert s.fraction == 1.0 and s.step == s.total_steps > 0
    assert [h["epoch"] for h in s.history] == [1, 2] and all("knn_accuracy" in h for h in s.history)
    # Learned: pairs separate far better than by the same network untrained (0.97 vs 0.86 measured).
    assert s.metrics["pair_auc"] >= s.metrics["pair_auc_random_init"] + 0.05, s.metrics
    assert Path(s.checkpoint).parent == registry.runs_dir and s.model == Path(s.checkpoint).name
    assert s.model.startswith("siamese-digits-")
    assert registry.names()[len(SHIPPED):] == [s.model] and registry.load(s.model).checkpoint.path == Path(s.checkpoint)
    assert registry.get("siamese").checkpoint.path == before  # offered, never the default
    assert len(s.losses) == len(s.loss_steps) > 0
    # The Train tab's next estimate for this kind of run uses the run's own pace, not a few timed steps.
    trained = json.loads((Path(s.checkpoint) / "card.json").read_text())["history"][-1]["train_seconds"]
    assert cost._rates[cost._pace_key(cfg)] == pytest.approx(trained / s.step)


@pytest.mark.slow
def test_second_start_refused_and_stop_is_prompt(registry: ModelRegistry) -> None:
    job = TrainingJob(registry)
    before = registry.get("rotation").checkpoint.path
    assert job.start(TrainConfig(task="rotation", dataset="digits", epochs=50), who="tab A")[0]
    _wait_for(job, lambda s: s.step > 0)
    ok, msg = job.start(TrainConfig(task="siamese", dataset="digits", epochs=1), who="tab B")
    assert not ok
    assert "rotation on digits" in msg and "already training" in msg and "tab A" in msg and "left" in msg
    t = time.perf_counter()
    message = job.stop()
    assert time.perf_counter() - t < 1.5
    assert job.snapshot().status == "stopped" and "previous model is kept" in message
    assert registry.get("rotation").checkpoint.path == before
    assert job.stop() == "Nothing is training."


def test_training_error_is_reported_and_previous_model_kept(registry: ModelRegistry, tmp_path: Path) -> None:
    from PIL import Image

    # One class only: the siamese task has no different-class pairs, and the engine refuses it.
    only = tmp_path / "one-class" / "cats"
    only.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (40, 40), (i * 30, 100, 200)).save(only / f"{i}.png")
    job = TrainingJob(registry)
    before = registry.get("siamese").checkpoint.path
    assert job.start(TrainConfig(task="siamese", dataset="folder", data_dir=str(tmp_path / "one-class"), epochs=1), who="test")[0]
    assert job.wait(60)
    s = job.snapshot()
    assert s.status == "failed" and "at least two classes" in s.error
    assert s.dataset == "folder:one-class" and "Training failed" in s.log[-1]
    assert registry.get("siamese").checkpoint.path == before
    assert job.start(TrainConfig(task="siamese", dataset="digits", epochs=1), who="test")[0]  # a failed run frees the job
    job.stop()


def test_loss_curve_stays_bounded(registry: ModelRegistry) -> None:
    job = TrainingJob(registry)
    for step in range(1, 5 * MAX_LOSS_POINTS + 1):
        job._add_loss_locked(step, 1.0 / step)
    s = job.snapshot()
    assert MAX_LOSS_POINTS // 2 <= len(s.losses) < MAX_LOSS_POINTS
    assert s.loss_steps == sorted(s.loss_steps) and s.loss_steps[-1] <= 5 * MAX_LOSS_POINTS
    assert s.losses == sorted(s.losses, reverse=True)  # averaging keeps a falling curve falling


def test_data_progress_updates_one_log_line(registry: ModelRegistry) -> None:
    job = TrainingJob(registry)
    job._on_data_progress("downloading CIFAR-10: 1 of 170 MB", 1 / 170)
    job._on_data_progress("downloading CIFAR-10: 2 of 170 MB", 2 / 170)
    s = job.snapshot()
    assert len(s.log) == 1 and s.log[0].endswith("2 of 170 MB") and s.fraction == 2 / 170
    job._log_locked("extracted")
    job._on_data_progress("decoding CIFAR-10 data_batch_1", 0.0)
    assert len(job.snapshot().log) == 3


def test_start_from_form_refuses_while_training_and_extracts_zips(registry: ModelRegistry, tmp_path: Path) -> None:
    job = TrainingJob(registry)
    assert job.start_from_form("siamese", "zip", 1) == "Not started: Upload a .zip of images first (one sub-folder per class gives labels)."
    assert job.start_from_form("siamese", "digits", 2.5).startswith("Not started: epochs must be a whole number")
    photos = _photo_zip(tmp_path)
    assert job.start_from_form("rotation", "zip", 500, zip_file=str(photos), who="tab A").startswith("Started rotation on folder:photos")
    assert list((registry.runs_dir / "uploads").glob("zip-*/photos/red/0.png"))
    refusal = job.start_from_form("siamese", "digits", 1, who="tab B")
    assert refusal.startswith("Not started: rotation on folder:photos (") and "started by tab A" in refusal
    job.stop()
    assert job.wait(30)


def _photo_zip(tmp_path: Path, size: tuple[int, int] = (36, 36), per_class: int = 6) -> Path:
    """A zip of two classes of flat-coloured pictures (red, blue), `per_class` each."""
    from PIL import Image

    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(per_class):
                img = tmp_path / f"{c}{i}.png"
                Image.new("RGB", size, tuple(min(255, v + 9 * i) for v in colour)).save(img)
                zf.write(img, f"photos/{c}/{i}.png")
    return path


def test_the_form_trains_photos_at_64_px_and_refuses_it_elsewhere(registry: ModelRegistry, tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    from ssl_core.inference import predict_rotation

    job = TrainingJob(registry)
    # Digits are 8 px and CIFAR-10 32 px: a larger size would only enlarge them, and is said so.
    assert job.start_from_form("rotation", "digits", 1, image_size=64) == (
        "Not started: 64 px is for folders of photos: digits images are smaller, so they would only be enlarged")
    assert job.start_from_form("rotation", "zip", 1, image_size=48).startswith("Not started: image size must be one of 32, 64 px")
    photos = _photo_zip(tmp_path, size=(96, 80))
    assert job.start_from_form("rotation", "zip", 1, zip_file=str(photos), image_size=64).startswith("Started rotation")
    assert job.wait(120)
    s = job.snapshot()
    assert s.status == "finished", s.log
    card = json.loads((Path(s.checkpoint) / "card.json").read_text())
    # The photo models' encoder: 64 px through a strided first layer; the card keeps both.
    assert card["config"]["image_size"] == card["model_args"]["image_size"] == 64 and card["model_args"]["stem_stride"] == 2
    picture = Image.new("RGB", (200, 120), (90, 160, 230))
    ImageDraw.Draw(picture).rectangle((0, 80, 200, 120), fill=(60, 120, 40))
    answer = predict_rotation(registry.load(s.model).checkpoint, picture)
    assert answer.model_input.shape == (3, 64, 64) and abs(sum(answer.probabilities.values()) - 1) < 1e-5


def _fake_run(runs: Path, shipped: Path, name: str, age_s: float, data_dir: str | None = None) -> Path:
    run = runs / name
    shutil.copytree(shipped / "digits-siamese", run)
    card = json.loads((run / "card.json").read_text())
    card["config"]["data_dir"] = data_dir
    (run / "card.json").write_text(json.dumps(card))
    t = time.time() - age_s
    os.utime(run, (t, t))
    return run


def _fake_upload(runs: Path, tag: str, age_s: float) -> Path:
    images = runs / "uploads" / f"zip-{tag}" / "my-photos"
    images.mkdir(parents=True)
    (images / "a.png").write_bytes(b"png")
    t = time.time() - age_s
    os.utime(runs / "uploads" / f"zip-{tag}", (t, t))
    return images


def test_prune_keeps_active_newest_and_the_data_they_need(tmp_path: Path, shipped_checkpoints: Path) -> None:
    runs = tmp_path / "runs"
    data_old, data_new, orphan = (_fake_upload(runs, t, 3600) for t in ("old", "new", "orphan"))
    fresh = _fake_upload(runs, "fresh", 5)  # just extracted for a start in progress
    active = _fake_run(runs, shipped_checkpoints, "siamese-folder-old", 5000, str(data_old))
    newest = [_fake_run(runs, shipped_checkpoints, f"siamese-digits-{i}", 100 * i) for i in range(1, 3)]
    with_data = _fake_run(runs, shipped_checkpoints, "siamese-folder-new", 50, str(data_new))
    stale = [_fake_run(runs, shipped_checkpoints, f"siamese-digits-old{i}", 4000 + i) for i in range(3)]
    (runs / ".siamese-x.tmp-1").mkdir()  # another writer's temp folder: not ours to judge

    removed = prune_runs(runs, {active}, max_runs=3)

    assert set(removed) == set(stale) | {orphan.parent}
    for kept in [active, with_data, *newest, data_old, data_new, fresh, runs / ".siamese-x.tmp-1"]:
        assert kept.exists(), kept
    for gone in removed:
        assert not gone.exists()
    assert prune_runs(runs, {active}, max_runs=3) == []  # nothing more to do


@pytest.mark.slow
def test_uploads_of_runs_that_saved_nothing_are_deleted(registry: ModelRegistry) -> None:
    from PIL import Image

    job = TrainingJob(registry)
    uploads = registry.runs_dir / "uploads"
    # A failed run (one class cannot make Siamese pairs) and a stopped run leave no data behind...
    one_class = uploads / "zip-failed" / "photos" / "cats"
    one_class.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (40, 40), (i * 30, 100, 200)).save(one_class / f"{i}.png")
    assert job.start(TrainConfig(task="siamese", dataset="folder", data_dir=str(one_class.parent), epochs=1))[0]
    assert job.wait(60) and job.snapshot().status == "failed"
    assert not (uploads / "zip-failed").exists()
    two_class = uploads / "zip-kept" / "photos"
    for c, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (two_class / c).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (36, 36), tuple(min(255, v + 5 * i) for v in colour)).save(two_class / c / f"{i}.png")
    shutil.copytree(uploads / "zip-kept", uploads / "zip-stopped")
    assert job.start(TrainConfig(task="rotation", dataset="folder", data_dir=str(uploads / "zip-stopped" / "photos"), epochs=500))[0]
    _wait_for(job, lambda s: s.step > 0)
    job.stop()
    assert job.wait(30) and job.snapshot().status == "stopped"
    # A stop inside the first epoch saved nothing and its zip goes; once an epoch has finished (an
    # epoch of these 24 images is one step, so it may have) the resumable state keeps it.
    assert (uploads / "zip-stopped").exists() == bool(job.snapshot().resumable)
    # ...while a finished run keeps its data: the app re-reads its held-out images for maps.
    assert job.start(TrainConfig(task="siamese", dataset="folder", data_dir=str(two_class), epochs=1))[0]
    assert job.wait(60) and job.snapshot().status == "finished", job.snapshot().log
    assert (two_class / "red" / "0.png").exists()


def test_the_apps_stop_keeps_finished_epochs_and_resume_continues_them(registry: ModelRegistry) -> None:
    job = TrainingJob(registry)
    assert job.start(TrainConfig(task="simclr", dataset="digits", epochs=40, batch_size=64, max_train_images=256),
                     who="tab A")[0]
    _wait_for(job, lambda s: len(s.history) >= 1, timeout=120)
    message = job.stop(wait=30)
    s = job.snapshot()
    assert s.status == "stopped" and s.resumable and (registry.runs_dir / s.resumable / "resume" / "state.json").is_file()
    assert "previous model is kept" in message and f'resume="{s.resumable}"' in message
    assert s.resumable not in registry.names()  # a stopped run is no model on offer
    assert job.start_from_form("", "", who="tab B", resume="../etc").startswith("Not started: '../etc' is not a stopped run")
    reply = job.start_from_form("", "", who="tab B", resume=s.resumable)
    assert reply == "Resumed simclr on digits for 40 epochs.", reply
    _wait_for(job, lambda s: s.step > 0)
    assert "resumed after epoch" in "\n".join(job.snapshot().log)
    job.stop(wait=30)
    assert job.wait(30)
