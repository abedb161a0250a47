"""Checkpoints that are damaged, altered or hostile are refused with a reason, and never executed;
a save killed at any moment leaves a loadable checkpoint (the old one or the new one, never a mix)."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ssl_core import checkpoints
from ssl_core.checkpoints import CARD, WEIGHTS, CheckpointError, load_checkpoint, make_card, save_checkpoint
from ssl_core.models import ModelArgs, SSLModel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ckpt(tmp_path: Path, shipped_checkpoints: Path) -> Path:
    """A copy of a shipped model to damage."""
    dest = tmp_path / "digits-siamese"
    shutil.copytree(shipped_checkpoints / "digits-siamese", dest)
    return dest


def set_card(folder: Path, **changes) -> None:
    card = json.loads((folder / CARD).read_text())
    card.update(changes)
    (folder / CARD).write_text(json.dumps(card))


def rehash(folder: Path) -> None:
    """What an attacker who rewrites the weights would also do: make the card's hash agree."""
    set_card(folder, weights_sha256=checkpoints.sha256(folder / WEIGHTS))


@pytest.mark.parametrize("dataset, arch", [("digits", "simple"), ("cifar10", "convnet")])
def test_shipped_checkpoints_load(shipped_checkpoints: Path, dataset: str, arch: str) -> None:
    for task in ("rotation", "siamese", "simclr"):
        ck = load_checkpoint(shipped_checkpoints / f"{dataset}-{task}")
        assert ck.card["task"] == task and ck.card["dataset"] == dataset and not ck.model.training
        assert ck.model.args.arch == arch


@pytest.mark.parametrize("keep", [0, 5, 8, 100, 0.5, 0.999])
def test_truncated_weights_are_refused(ckpt: Path, keep: float) -> None:
    data = (ckpt / WEIGHTS).read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    (ckpt / WEIGHTS).write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated|not a valid safetensors|does not match its card"):
        load_checkpoint(ckpt)
    # Even with the hash made to agree, a cut file is caught by the format check or the reader.
    rehash(ckpt)
    with pytest.raises(CheckpointError, match="truncated|not a valid safetensors|could not be read"):
        load_checkpoint(ckpt)


def test_altered_weights_are_refused(ckpt: Path) -> None:
    data = bytearray((ckpt / WEIGHTS).read_bytes())
    data[-100] ^= 0xFF  # one weight changed: same size, valid format
    (ckpt / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(ckpt)


def test_card_describing_another_model_is_refused(ckpt: Path) -> None:
    # The card says width 16; the weights are the width-32 model's.
    set_card(ckpt, model_args={"task": "siamese", "width": 16, "feature_dim": 128, "out_dim": 128})
    with pytest.raises(CheckpointError, match="weights do not fit the model its card describes"):
        load_checkpoint(ckpt)


def test_weights_with_missing_or_extra_tensors_are_refused(ckpt: Path) -> None:
    model = SSLModel(ModelArgs("siamese"))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({**state, "backdoor": torch.zeros(3)}, str(ckpt / WEIGHTS))
    rehash(ckpt)
    with pytest.raises(CheckpointError, match="do not fit.*backdoor"):
        load_checkpoint(ckpt)
    state.pop("head.bias")
    save_file(state, str(ckpt / WEIGHTS))
    rehash(ckpt)
    with pytest.raises(CheckpointError, match="do not fit.*head.bias"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    "card_text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"task": "siamese"}', "lacks dataset, model_args, weights_sha256"),
        ("\xff\xfe", "not valid JSON"),
    ],
)
def test_broken_cards_are_refused(ckpt: Path, card_text: str, message: str) -> None:
    (ckpt / CARD).write_bytes(card_text.encode("latin1"))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def test_unknown_task_and_bad_model_args_are_refused(ckpt: Path) -> None:
    set_card(ckpt, task="os.system")
    with pytest.raises(CheckpointError, match="unknown task 'os.system'"):
        load_checkpoint(ckpt)
    set_card(ckpt, task="siamese", model_args={"task": "siamese", "width": 32, "exec": "rm -rf /"})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(ckpt)


def test_missing_files_are_named(ckpt: Path, tmp_path: Path) -> None:
    (ckpt / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="no card.json found"):
        load_checkpoint(tmp_path / "nowhere")


class _Payload:
    """Unpickling this creates the marker file: the proof a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [0, 2, 4, "torch.save"])
def test_pickle_renamed_to_safetensors_is_refused_and_never_run(ckpt: Path, tmp_path: Path, protocol) -> None:
    marker = tmp_path / "PWNED"
    if protocol == "torch.save":
        torch.save({"x": _Payload(marker)}, ckpt / WEIGHTS)  # a zip holding a pickle
    else:
        (ckpt / WEIGHTS).write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    assert not marker.exists()
    for hash_matches in (False, True):  # the attacker may also have fixed the card's hash
        if hash_matches:
            rehash(ckpt)
        with pytest.raises(CheckpointError, match="pickle/zip file, not safetensors|not a valid safetensors"):
            load_checkpoint(ckpt)
        assert not marker.exists(), "loading the checkpoint executed code from the pickle"
    # Sanity: the payload really does run when something does unpickle it.
    if protocol != "torch.save":
        pickle.loads((ckpt / WEIGHTS).read_bytes())
        assert marker.exists()


def _model(seed: int) -> SSLModel:
    torch.manual_seed(seed)
    return SSLModel(ModelArgs("siamese"))


def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (ckpt / WEIGHTS).read_bytes()

    def half_written(state, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_file", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(ckpt, _model(1), make_card(_model(1), {}, "digits", [], {}))
    assert (ckpt / WEIGHTS).read_bytes() == before
    assert load_checkpoint(ckpt).card["task"] == "siamese"
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]  # no temp folders left


def test_a_kill_between_the_two_renames_is_recovered(ckpt: Path) -> None:
    # The one moment the folder name is absent: the old checkpoint has been moved aside.
    aside = ckpt.with_name(f".{ckpt.name}.old-123-abc")
    os.replace(ckpt, aside)
    assert load_checkpoint(ckpt).card["task"] == "siamese"
    assert ckpt.is_dir() and not aside.exists()


SAVER = textwrap.dedent(
    """
    import sys, torch
    from ssl_core.checkpoints import make_card, save_checkpoint
    from ssl_core.models import ModelArgs, SSLModel
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(SSLModel(ModelArgs("siamese")))
    i = 0
    while True:
        m = models[i % 2]
        save_checkpoint(sys.argv[1], m, make_card(m, {}, "digits", [], {"which": i % 2}))
        if i == 0:
            print("saving", flush=True)
        i += 1
    """
)


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path: Path) -> None:
    """A real process saving in a loop, killed at random moments: what is left always loads, and
    its card and weights belong together (the model the card names, bit for bit)."""
    dest = tmp_path / "run"
    expected = [_model(0).state_dict(), _model(1).state_dict()]
    save_checkpoint(dest, _model(0), make_card(_model(0), {}, "digits", [], {"which": 0}))
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for trial in range(5):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(dest)], stdout=subprocess.PIPE, env=env, cwd=REPO)
        try:
            assert proc.stdout.readline().strip() == b"saving"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        ck = load_checkpoint(dest)
        which = ck.card["metrics"]["which"]
        state = ck.model.state_dict()
        assert all(torch.equal(state[k], expected[which][k]) for k in state), f"trial {trial}: mixed weights"
    # The next save after all those crashes works and is what loads.
    save_checkpoint(dest, _model(1), make_card(_model(1), {}, "digits", [], {"which": 1}))
    assert load_checkpoint(dest).card["metrics"]["which"] == 1
