"""The engine: real learning on digits (the issue's floors), events, stop, reproducibility, errors."""

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import untrained_figures
from ssl_core.__main__ import main as cli
from ssl_core.checkpoints import load_checkpoint
from ssl_core.train import TrainConfig, TrainingError, train

FLOORS = {
    "rotation": {"rotation_accuracy": 0.96},
    "siamese": {"pair_auc": 0.995, "knn_accuracy": 0.98},
    "simclr": {"knn_accuracy": 0.97},
}
# What each task learns, and by how much it must beat the same network untrained (measured on the
# shipped digits models: rotation 0.976 vs 0.25, Siamese pair ROC-AUC 0.998 vs 0.86, SimCLR 0.948
# vs 0.87). The kNN floors above are the issue's, not proof of learning: untrained, 0.96-0.98.
LEARNED = {"rotation": ("rotation_accuracy", 0.5), "siamese": ("pair_auc", 0.08), "simclr": ("pair_auc", 0.04)}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["rotation", "siamese", "simclr"])
def test_cli_defaults_meet_quality_floors(task, tmp_path, capsys):
    """The issue's floors, from a real default-settings run of the CLI on digits (2 CPU cores)."""
    out = tmp_path / task
    start = time.perf_counter()
    assert cli(["train", "--task", task, "--dataset", "digits", "--out", str(out)]) == 0
    seconds = time.perf_counter() - start
    card = json.loads((out / "card.json").read_text())
    m = card["metrics"]
    for key, floor in FLOORS[task].items():
        assert m[key] >= floor, (key, m)
    untrained = untrained_figures(TrainConfig.from_dict(card["config"]))
    assert untrained["knn_accuracy"] == pytest.approx(m["knn_accuracy_random_init"])  # the run's own initialisation
    key, margin = LEARNED[task]
    assert m[key] >= untrained[key] + margin, (key, m[key], untrained[key])
    if task in ("siamese", "simclr"):
        assert {"pair_auc", "pair_accuracy", "threshold"} <= m.keys()
    assert card["task"] == task and card["dataset"] == "digits" and card["metrics_split"] == "test"
    assert card["arch"] == "simple" and card["config"]["arch"] == "simple"  # the digits recipe
    # Digits' untrained features already give a probe of ~0.97: the probe only shows training kept them usable.
    assert m["linear_probe_accuracy"] >= m["linear_probe_accuracy_random_init"] - 0.05 and "linear_probe_accuracy" in card["evaluation"]
    assert card["class_names"] == [str(i) for i in range(10)]
    assert len(card["history"]) == card["config"]["epochs"]
    summary = capsys.readouterr().out
    assert task in summary and "test split" in summary
    # Generous against a loaded shared CI machine; measured ~15-35 s each on an idle 2-core one.
    assert seconds < 120
    ckpt = load_checkpoint(out)
    assert ckpt.model.args.task == task


def test_cli_settings_beyond_the_recipe_reach_the_run_and_its_card(tmp_path: Path) -> None:
    """--weight-decay and --label-smoothing (used to tune the photo rotation recipe) override the
    recipe's, are recorded on the card, and out-of-range values are refused before any training."""
    out = tmp_path / "run"
    assert cli(["train", "--task", "rotation", "--dataset", "digits", "--epochs", "1", "--weight-decay", "0.001",
                "--label-smoothing", "0.05", "--out", str(out)]) == 0
    config = json.loads((out / "card.json").read_text())["config"]
    assert (config["weight_decay"], config["label_smoothing"]) == (0.001, 0.05)
    assert cli(["train", "--task", "rotation", "--dataset", "digits", "--label-smoothing", "0.9", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_events_progress_and_history():
    events = []
    result = train(TrainConfig(task="siamese", epochs=2, max_train_images=400), events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2
    steps = [e for e in events if e.kind == "step"]
    assert steps[-1].step == steps[-1].total_steps and steps[-1].fraction == 1.0
    assert all(e.loss is not None and e.loss == e.loss for e in steps)
    assert steps[3].eta is not None and steps[3].eta > 0
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert "knn_accuracy" in result.history[0]
    assert events[-1].metrics == result.metrics and "pair_auc" in result.metrics


def test_same_seed_same_weights_on_cpu():
    cfg = dict(task="rotation", epochs=1, max_train_images=200, device="cpu")
    a = train(TrainConfig(**cfg))
    b = train(TrainConfig(**cfg))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.metrics == b.metrics
    c = train(TrainConfig(**cfg, seed=1))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_stop_is_honoured_within_one_step():
    stop = threading.Event()
    seen = []

    def on_event(e):
        seen.append(e)
        if e.kind == "step" and e.step == 3:
            stop.set()

    result = train(TrainConfig(task="simclr", epochs=50), on_event, stop)
    assert result.stopped and result.metrics == {}
    assert seen[-1].kind == "stopped"
    assert max(e.step for e in seen) == 3


def test_siamese_on_unlabeled_folder_says_why(tmp_path):
    from PIL import Image

    for i in range(8):
        Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(tmp_path / f"{i}.png")
    with pytest.raises(TrainingError, match="needs labels"):
        train(TrainConfig(task="siamese", dataset="folder", data_dir=str(tmp_path), epochs=1))


def test_unlabeled_folder_trains_rotation_without_label_metrics(tmp_path):
    from PIL import Image

    for i in range(12):
        img = Image.new("RGB", (32, 32), "white")
        img.paste((0, 0, 0), (4, 4, 12 + i, 10))  # a bar near the top: orientation is learnable
        img.save(tmp_path / f"{i}.png")
    result = train(TrainConfig(task="rotation", dataset="folder", data_dir=str(tmp_path), epochs=1, batch_size=4))
    assert "rotation_accuracy" in result.metrics and "knn_accuracy" not in result.metrics
    assert "need class labels" in result.metrics["note"]


def test_cuda_requested_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TrainingError, match="no CUDA"):
        train(TrainConfig(task="rotation", epochs=1, device="cuda"))


def test_recipes_fill_what_is_not_given_and_the_card_keeps_them():
    digits = TrainConfig(task="rotation")
    photos = TrainConfig(task="rotation", dataset="cifar10")
    assert (digits.arch, digits.flip, digits.optimizer) == ("simple", False, "adam")
    assert (photos.arch, photos.flip) == ("convnet", True) and photos.max_shift > 0 and photos.warmup > 0
    mine = TrainConfig(task="simclr", dataset="folder", arch="simple", epochs=3, lr=0.01)
    assert (mine.arch, mine.epochs, mine.lr) == ("simple", 3, 0.01)  # given values win over the recipe
    assert TrainConfig.from_dict(photos.to_dict()) == photos
    with pytest.raises(ValueError, match="arch must be one of"):
        TrainConfig(arch="resnet9000")


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None),
])
def test_bf16_only_on_cpus_with_bf16_units(monkeypatch, amx, avx512_bf16, expected):
    from ssl_core.train import autocast_dtype

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    cpu = torch.device("cpu")
    assert autocast_dtype(TrainConfig(), cpu) == expected
    assert autocast_dtype(TrainConfig(precision="fp32"), cpu) is None
    assert autocast_dtype(TrainConfig(precision="bf16"), cpu) == torch.bfloat16


def test_freed_training_memory_is_reused_without_page_faults():
    """After `reuse_freed_memory`, a freed 64 MB block (like a CIFAR-10 batch's activations) is
    served again from the heap; glibc's default maps it afresh each time: 16,384 page faults.
    Measured in a fresh process, as other tests' servers and workers would add faults of their own."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    code = """
import resource, torch
from ssl_core.speed import reuse_freed_memory
def faults_per_cycle():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        x = torch.ones(64 << 20, dtype=torch.uint8)
        del x
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
faults_per_cycle()
plain = faults_per_cycle()
assert reuse_freed_memory() and reuse_freed_memory()  # idempotent
faults_per_cycle(); faults_per_cycle()  # the heap grows to hold the block once
print(plain, faults_per_cycle())
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plain, tuned = map(float, out.stdout.split())
    assert plain > 10_000 and tuned < 1000, (plain, tuned)


@pytest.mark.slow
def test_ctrl_c_stops_the_cli_at_the_next_step_and_writes_nothing(tmp_path: Path) -> None:
    """The first Ctrl-C (SIGINT) ends a run cleanly at the next step: a message, exit status 130,
    and no checkpoint or temporary folder left behind (a resumable state only if an epoch finished)."""
    import os
    import re
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "ssl_core", "train", "--task", "rotation", "--dataset", "digits",
                             "--out", str(tmp_path / "run")], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    while "epoch 1/20" not in seen:  # the first epoch's progress bar: the steps are under way
        ch = proc.stdout.read(1)
        assert ch, seen[-2000:]
        seen += ch
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, (seen + rest)[-2000:]
    # A fast CPU (CI's) can finish a digits epoch (well under a second) before the signal lands:
    # then the finished epochs are kept to resume, and still no checkpoint is written.
    done = re.search(r"stopped by request after (\d+) of 20 epochs: (.*)", rest)
    assert done, rest[-2000:]
    if done.group(1) == "0":
        assert done.group(2) == "no checkpoint written."
        assert list(tmp_path.iterdir()) == []
    else:
        assert done.group(2).startswith("resumable state kept in"), done.group(0)
        assert [p.name for p in (tmp_path / "run").iterdir()] == ["resume"]


@pytest.mark.slow
def test_a_64_px_photo_run_end_to_end(photo_slice, tmp_path, monkeypatch):
    """`--image-size 64` on the Tiny ImageNet layout: the data, the strided convnet, the frames, the
    card and an upload all at 64 px; the run learns to tell turns (chance 0.25)."""
    from ssl_core import inference

    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    out = tmp_path / "rot64"
    assert cli(["train", "--task", "rotation", "--dataset", "folder", "--data-dir", str(photo_slice), "--image-size", "64",
                "--stem-stride", "2", "--epochs", "4", "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["image_size"] == 64 and card["config"]["image_size"] == 64 and card["model_args"]["stem_stride"] == 2
    assert card["metrics"]["test_images"] == 200
    assert card["metrics"]["rotation_accuracy"] >= untrained_figures(TrainConfig.from_dict(card["config"]))["rotation_accuracy"] + 0.15
    frames = json.loads((out / "frames.json").read_text())
    assert len(frames["frames"]) >= 2
    ckpt = load_checkpoint(out)
    photo = sorted((photo_slice / "test" / "school bus").iterdir())[0]
    picture, x = inference.model_input(ckpt, photo)
    assert x.shape == (3, 64, 64) and picture.size == (64, 64)
    assert inference.predict_rotation(ckpt, photo).model_input.shape == (3, 64, 64)
