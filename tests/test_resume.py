"""Resumable runs and time budgets: a stopped run continued with --resume ends as an uninterrupted
one would (bit for bit on the CPU), damaged or foreign states are refused in one line, and a
minutes budget finishes its schedule inside the budget. Real digits training, seconds each."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import untrained_figures
from ssl_core.__main__ import main as cli
from ssl_core.__main__ import stopped_message
from ssl_core.resume import STATE_DIR, ResumeError
from ssl_core.runs import run_and_save
from ssl_core.train import TrainConfig, train

SMALL = dict(task="simclr", dataset="digits", epochs=2, batch_size=64, max_train_images=300, device="cpu", seed=3)


def stop_after_epoch(k: int) -> tuple:
    stop = threading.Event()

    def on_event(e) -> None:  # noqa: ANN001
        if e.kind == "epoch" and e.epoch == k:
            stop.set()

    return on_event, stop


@pytest.fixture(scope="module")
def uninterrupted():
    return train(TrainConfig(**SMALL))


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A run's folder after a stop during epoch 2: the state of epoch 1, no checkpoint."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    result, path = run_and_save(TrainConfig(**SMALL), out, *stop_after_epoch(1))
    assert result.stopped and path is None and len(result.history) == 1
    assert result.state == out / STATE_DIR
    return out


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("elapsed", "train_seconds")} for h in history]


def test_a_stopped_run_resumed_ends_as_an_uninterrupted_one(uninterrupted, stopped: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR]  # no final checkpoint after a stop
    assert sorted(p.name for p in (out / STATE_DIR).iterdir()) == ["frames.json", "state.json", "state.safetensors"]
    result, path = run_and_save(TrainConfig(**SMALL), out, resume=out)
    assert path == out and (out / "card.json").is_file()
    assert not (out / STATE_DIR).exists()  # a finished run leaves no state behind
    # Same thread count, same CPU: every weight, every epoch's numbers and every metric are equal.
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), result.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert _without_time(result.history) == _without_time(uninterrupted.history)
    assert result.metrics == uninterrupted.metrics
    # The learning frames go on from the stopped run's: the replay starts at the untrained encoder.
    assert [(f.step, f.knn_accuracy) for f in result.frames] == [(f.step, f.knn_accuracy) for f in uninterrupted.frames]
    card = json.loads((out / "card.json").read_text())
    assert len(card["history"]) == card["config"]["epochs"] == 2
    assert result.seconds >= result.history[0]["elapsed"]  # the clock goes on from the stopped run's
    # The card says where each stretch ran: a run carried across sessions may change CPU.
    sessions = card["machine"]["sessions"]
    assert [s["from_epoch"] for s in sessions] == [1, 2] and all(s["cpu"] == card["machine"]["cpu"] for s in sessions)
    # ...and how long each trained: the stopped stretch its epoch, the resumed one the rest.
    clock = [h["elapsed"] / 60 for h in card["history"]]
    assert [s["minutes"] for s in sessions] == [round(clock[0], 1), round(clock[1] - clock[0], 1)]
    assert "sessions" not in uninterrupted.machine and uninterrupted.machine["precision"] in ("fp32", "bf16")


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "state.safetensors").write_bytes((d / "state.safetensors").read_bytes()[:2000]), "is damaged"),
    (lambda d: (d / "state.json").write_text('{"format": 1, "epoch": '), "state.json is damaged"),
    (lambda d: (d / "state.safetensors").unlink(), "state.safetensors is missing"),
    (lambda d: shutil.rmtree(d), "no resume state in"),
])
def test_a_damaged_state_is_refused_in_one_line(stopped: Path, tmp_path: Path, damage, message: str) -> None:
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    damage(out / STATE_DIR)
    with pytest.raises(ResumeError, match=message) as info:
        train(TrainConfig(**SMALL), out=out, resume=out)
    assert "\n" not in str(info.value)


def test_a_state_of_another_run_is_refused_naming_what_differs(stopped: Path) -> None:
    with pytest.raises(ResumeError) as info:
        train(TrainConfig(**dict(SMALL, lr=0.01, seed=4)), resume=stopped)
    text = str(info.value)
    assert "different run" in text and "lr (0.002 there, 0.01 here)" in text and "seed (3 there, 4 here)" in text
    assert "batch_size" not in text and "\n" not in text


def test_cli_resume_finishes_the_run_and_refuses_a_folder_without_state(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "--task", "simclr", "--dataset", "digits", "--epochs", "2", "--batch-size", "128", "--seed", "3",
            "--device", "cpu", "--out", str(out)]
    cfg = TrainConfig(task="simclr", dataset="digits", epochs=2, batch_size=128, seed=3, device="cpu")
    assert run_and_save(cfg, out, *stop_after_epoch(1))[0].stopped  # what a Ctrl-C in epoch 2 leaves
    assert cli(args + ["--resume", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert "error: no resume state in" in err and "Traceback" not in err
    assert cli(args[:-6] + ["--seed", "4", "--device", "cpu", "--out", str(out), "--resume", str(out)]) == 1
    assert "seed (3 there, 4 here)" in capsys.readouterr().err
    assert cli(args + ["--resume", str(out)]) == 0
    # The progress bar goes on from epoch 1's last step, so its rate and time left are true.
    first = re.search(r"\| *(\d+)/(\d+) \[", capsys.readouterr().err)
    assert first and 2 * int(first[1]) == int(first[2]) > 0
    assert (out / "card.json").is_file() and not (out / STATE_DIR).exists()
    card = json.loads((out / "card.json").read_text())
    assert [h["epoch"] for h in card["history"]] == [1, 2]


def test_the_stop_message_gives_the_command_that_resumes(tmp_path: Path) -> None:
    result = SimpleNamespace(history=[{"epoch": 1}], seconds=30.0, state=tmp_path / "out" / STATE_DIR)
    argv = ["train", "--task", "simclr", "--out", str(tmp_path / "out")]
    message = stopped_message(result, TrainConfig(**SMALL), argv)
    assert message == (f"stopped by request after 1 of 2 epochs: resumable state kept in {tmp_path / 'out'} "
                       f"(python -m ssl_core train --task simclr --out {tmp_path / 'out'} --resume {tmp_path / 'out'})")
    result.state = None
    assert stopped_message(result, TrainConfig(**SMALL), argv).endswith("no checkpoint written.")


# ------------------------------------------------------------------------------------ time budget
def test_a_minutes_budget_finishes_its_schedule_in_time(tmp_path: Path) -> None:
    events = []
    t = time.perf_counter()
    result, path = run_and_save(TrainConfig(task="rotation", dataset="digits", minutes=0.25, device="cpu"),
                                tmp_path / "run", events.append)
    wall = time.perf_counter() - t
    steps = [e for e in events if e.kind == "step"]
    assert result.seconds <= 15 + 5, result.seconds  # the budget, plus a margin for a busy shared machine
    assert result.seconds >= 0.7 * 15 and wall < 15 + 15  # it used its budget; loading is outside it
    # The schedule ran to its fitted end: the last epoch's report has the plan ending at the last
    # step. Steps that slow after a fit may leave a sliver of an epoch past the deadline (3 of 355
    # steps in one run of three here); the epoch-end fit then ends the run there rather than start
    # an epoch for it, so the sliver is under a tenth of an epoch.
    last = [e for e in events if e.kind == "epoch"][-1]
    assert last.step == last.total_steps == steps[-1].step, (last.step, last.total_steps, steps[-1].step)
    steps_per_epoch = max(e.step for e in steps if e.epoch == 1)
    assert 0 <= steps[-1].total_steps - steps[-1].step < steps_per_epoch // 10, (steps[-1].total_steps, steps_per_epoch)
    assert result.history[-1]["lr"] < 0.02 * result.config.lr  # ...where the rate is ~0
    assert all(0 < e.fraction <= 1 and e.epochs >= e.epoch for e in steps)
    card = json.loads((path / "card.json").read_text())
    assert card["config"]["minutes"] == 0.25 and card["config"]["epochs"] == len(card["history"]) >= 2
    assert card["metrics"]["rotation_accuracy"] >= untrained_figures(result.config)["rotation_accuracy"] + 0.25  # untrained: 0.25


def test_minutes_are_validated() -> None:
    with pytest.raises(ValueError, match="minutes must be between 0.1 and 720"):
        TrainConfig(minutes=0.01)
    with pytest.raises(SystemExit):
        cli(["train", "--task", "rotation", "--epochs", "2", "--minutes", "3", "--out", "x"])  # one or the other


def test_a_state_saved_before_later_settings_existed_still_resumes(stopped: Path, tmp_path: Path) -> None:
    # States written before image_size, stem_stride, per_class and depth were settings (the photo rotation
    # run's first sessions) hold none of them: they were saved with resume.BEFORE's values.
    from ssl_core.resume import BEFORE

    old = tmp_path / "old"
    shutil.copytree(stopped, old)
    meta = old / STATE_DIR / "state.json"
    state = json.loads(meta.read_text())
    for key in BEFORE:
        del state["config"][key]
    meta.write_text(json.dumps(state))
    result = train(TrainConfig(**SMALL), resume=old)
    assert not result.stopped and len(result.history) == 2
