"""Training faults through the real engine and the app's one background job: each ends with a
message a person can act on, the previous model keeps answering, and nothing half-made is kept."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

import ssl_core.train as engine
from ssl_core.data import CIFAR10_FOLDER, DataError, load_dataset
from ssl_core.jobs import ModelRegistry, TrainingJob
from ssl_core.train import TrainConfig, TrainingError, train

TINY = dict(task="siamese", dataset="digits", epochs=1)  # ~2 s on 2 cores


@pytest.fixture
def job(tmp_path: Path, shipped_checkpoints: Path) -> TrainingJob:
    return TrainingJob(ModelRegistry(shipped_checkpoints, tmp_path / "runs"))


def active_sha(job: TrainingJob, task: str) -> str:
    return job.registry.get(task).checkpoint.card["weights_sha256"]


def saved_runs(job: TrainingJob) -> list[str]:
    return sorted(p.name for p in job.runs_dir.iterdir() if p.is_dir()) if job.runs_dir.exists() else []


def finish(job: TrainingJob, timeout: float = 120.0):
    assert job.wait(timeout), "the training job did not end"
    return job.snapshot()


def poison_weights_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Let the real engine build its model, then set one weight to NaN when `step` steps are done,
    as a diverging run does. The engine's own loss check must catch it."""
    real_build = engine.model_for
    built: list[torch.nn.Module] = []

    def build_and_watch(cfg):  # noqa: ANN001, ANN202
        model = real_build(cfg)
        built.append(model)
        return model

    real_loss = engine.TrainStep.loss
    calls = {"n": 0}

    def step_then_poison(self, idx):
        if calls["n"] == step:
            with torch.no_grad():
                built[-1].head.weight[0, 0] = float("nan")
        calls["n"] += 1
        return real_loss(self, idx)

    monkeypatch.setattr(engine, "model_for", build_and_watch)
    monkeypatch.setattr(engine.TrainStep, "loss", step_then_poison)


# ------------------------------------------------------------------------------- loss turns NaN
def test_nan_loss_stops_the_engine_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    poison_weights_at(monkeypatch, step=3)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 4: training diverged\. Try a lower learning rate"):
        train(TrainConfig(**TINY))


def test_nan_loss_in_the_job_keeps_the_previous_model(job: TrainingJob, monkeypatch: pytest.MonkeyPatch) -> None:
    before = active_sha(job, "siamese")
    poison_weights_at(monkeypatch, step=2)
    started, _ = job.start(TrainConfig(**TINY), who="test")
    assert started
    snap = finish(job)
    assert snap.status == "failed"
    assert "training diverged" in snap.error and "previous model is kept" in snap.error
    assert "Training failed" in snap.log[-1]
    assert active_sha(job, "siamese") == before and saved_runs(job) == []
    # The job is free again: a healthy run now finishes and joins the models on offer by its name,
    # while the default for every other visitor stays the shipped model.
    monkeypatch.undo()
    assert job.start(TrainConfig(**TINY), who="test")[0]
    snap = finish(job)
    assert snap.status == "finished" and len(saved_runs(job)) == 1 and snap.model in job.registry.names("siamese")
    assert active_sha(job, "siamese") == before
    assert job.registry.load(snap.model).card["weights_sha256"] != before


# ------------------------------------------------------------------------------- out of memory
@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 40000000000 bytes."),
        MemoryError(),
    ],
    ids=["cuda", "cpu-allocator", "python"],
)
def test_out_of_memory_suggests_a_smaller_batch(job: TrainingJob, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def no_memory(self, idx):
        raise error

    monkeypatch.setattr(engine.TrainStep, "loss", no_memory)
    before = active_sha(job, "siamese")
    assert job.start(TrainConfig(**TINY, batch_size=512), who="test")[0]
    snap = finish(job)
    assert snap.status == "failed"
    assert snap.error == "Out of memory at batch size 512: try a smaller batch size."
    assert active_sha(job, "siamese") == before and saved_runs(job) == []


def test_other_runtime_errors_are_not_mistaken_for_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, idx):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(engine.TrainStep, "loss", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train(TrainConfig(**TINY))


# ------------------------------------------------------------------------------ stop mid-epoch
def test_stop_mid_epoch_ends_quickly_and_keeps_the_previous_model(job: TrainingJob) -> None:
    before = active_sha(job, "rotation")
    # Batch 8: ~180 steps per epoch, so "mid-epoch" is unambiguous.
    assert job.start(TrainConfig(task="rotation", epochs=50, batch_size=8), who="test")[0]
    deadline = time.monotonic() + 60
    while job.snapshot().step < 5:
        assert time.monotonic() < deadline, "training never got going"
        time.sleep(0.02)
    t0 = time.monotonic()
    message = job.stop(wait=10)
    assert time.monotonic() - t0 < 5
    snap = job.snapshot()
    assert snap.status == "stopped"
    assert message.startswith("Stopped rotation on digits at epoch 1/50") and "previous model is kept" in message
    steps_per_epoch = snap.total_steps // snap.epochs
    assert 5 <= snap.step < steps_per_epoch  # it really stopped inside the first epoch
    assert active_sha(job, "rotation") == before and saved_runs(job) == []
    assert job.stop() == "Nothing is training."


# ------------------------------------------------------------------- CIFAR-10 download that breaks
class _DroppedConnection:
    """What urllib returns for the CIFAR-10 URL on a bad day: headers promise 170 MB, the body
    stops after 100 KB with a reset."""

    def __init__(self, url: str) -> None:
        self.url, self.status, self.length = url, 200, 170_498_071
        self.headers = {"Content-Length": str(self.length)}
        self._sent = 0

    def read(self, n: int = -1) -> bytes:
        if self._sent >= 100_000:
            raise ConnectionResetError(104, "Connection reset by peer")
        self._sent += 50_000
        return b"\x1f\x8b\x08" + bytes(49_997) if self._sent == 50_000 else bytes(50_000)

    def __enter__(self) -> "_DroppedConnection":
        return self

    def __exit__(self, *exc) -> None:
        return None


@pytest.fixture
def broken_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every HTTP request made through urllib (ours or torchvision's) drops halfway."""
    import urllib.request

    urls: list[str] = []

    def urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else str(request)
        urls.append(url)
        return _DroppedConnection(url)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return urls


def test_failed_cifar_download_leaves_no_corrupt_cache(tmp_path: Path, broken_network: list[str]) -> None:
    root = tmp_path / "data"
    for attempt in range(2):  # the second try meets no fake "finished" archive, so no checksum error
        with pytest.raises(DataError, match=r"CIFAR-10 could not be downloaded .*Connection reset by peer.*"
                                            r"Check the network and try again.*offline 'digits' dataset"):
            load_dataset("cifar10", root)
        left = sorted(p.name for p in root.iterdir())
        # At most a resumable ".part" file: never a complete-looking archive or a half folder.
        assert all(name.endswith(".part") for name in left), left
        assert not (root / CIFAR10_FOLDER).exists()
    assert broken_network and all("cifar-10-python.tar.gz" in u for u in broken_network)


def test_failed_cifar_download_in_the_job_is_reported(job: TrainingJob, tmp_path: Path, broken_network: list[str]) -> None:
    assert job.start(TrainConfig(task="siamese", dataset="cifar10", data_dir=str(tmp_path / "data"), epochs=1), who="test")[0]
    snap = finish(job)
    assert snap.status == "failed" and "could not be downloaded" in snap.error
    assert not (tmp_path / "data" / CIFAR10_FOLDER).exists() and saved_runs(job) == []


def test_half_extracted_cifar_folder_is_refused_by_checksum(tmp_path: Path) -> None:
    # A crash during extraction leaves the folder with some files cut short: refused, with the fix.
    folder = tmp_path / CIFAR10_FOLDER
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"\x80\x04 only a few bytes")
    with pytest.raises(DataError, match="failed their checksum .*Delete the folder to download it again"):
        load_dataset("cifar10", tmp_path)


# --------------------------------------------------------------------------- validated settings
@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(epochs=0), "epochs must be between 1 and 500; got 0"),
        (dict(epochs=10_000), "epochs must be between 1 and 500"),
        (dict(epochs=2.5), "epochs must be a whole number; got 2.5"),
        (dict(epochs="3"), "epochs must be between 1 and 500; got '3'"),
        (dict(batch_size=1), "batch_size must be between 2 and 4096"),
        (dict(batch_size=10**9), "batch_size must be between 2 and 4096"),
        (dict(batch_size=16.5), "batch_size must be a whole number"),
        (dict(lr=0.0), "lr must be between 1e-06 and 1"),
        (dict(lr=5.0), "lr must be between 1e-06 and 1"),
        (dict(lr=math.nan), "lr must be between 1e-06 and 1; got nan"),
        (dict(lr=math.inf), "lr must be between 1e-06 and 1; got inf"),
        (dict(weight_decay=-0.1), "weight_decay must be between 0 and 0.1; got -0.1"),
        (dict(label_smoothing=0.9), "label_smoothing must be between 0 and 0.5; got 0.9"),
        (dict(task="jigsaw"), "task must be one of rotation, siamese, simclr; got 'jigsaw'"),
        (dict(device="tpu"), "device must be auto, cpu or cuda"),
    ],
)
def test_settings_out_of_range_get_messages(changes: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig(**{**TINY, **changes})
    assert str(info.value).startswith(message)


def test_whole_floats_from_sliders_are_accepted() -> None:
    cfg = TrainConfig(**{**TINY, "epochs": 3.0, "batch_size": 64.0})
    assert (cfg.epochs, cfg.batch_size) == (3, 64) and isinstance(cfg.epochs, int)


def test_unknown_dataset_and_missing_folder_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="needs a folder of images"):
        load_dataset("folder")
    with pytest.raises(DataError, match="Image folder not found"):
        load_dataset("folder", tmp_path / "missing")
