"""The time-to-accuracy benchmark: when a run first reached its target, and the seed's recipe as a config."""

import pytest
import torch

from conftest import untrained_figures
from ssl_core.recipes import seed_recipe
from ssl_core.time_to_accuracy import TARGETS, first_reached
from ssl_core.train import TrainConfig, train


def test_first_reached_counts_the_training_steps_own_minutes():
    history = [{"epoch": 1, "rotation_accuracy": 0.61, "train_seconds": 60.0, "elapsed": 70.0},
               {"epoch": 2, "rotation_accuracy": 0.76, "train_seconds": 120.0, "elapsed": 140.0},
               {"epoch": 3, "rotation_accuracy": 0.80, "train_seconds": 180.0, "elapsed": 210.0}]
    assert first_reached(history, "rotation_accuracy", 0.75) == pytest.approx(2.0)
    assert first_reached(history, "rotation_accuracy", 0.9) is None
    assert first_reached(history, "knn_accuracy", 0.1) is None
    assert set(TARGETS) == {"rotation", "simclr", "siamese"}


def test_the_seed_recipe_trains_one_turn_per_image_at_a_constant_rate():
    """The seed's settings run in the engine: SimpleCNN, one random turn per image, Adam at a fixed 1e-3."""
    cfg = TrainConfig(task="rotation", dataset="digits", epochs=2, max_train_images=256, device="cpu",
                      **seed_recipe("rotation"))
    result = train(cfg)
    assert cfg.arch == "simple" and cfg.turns == 1 and cfg.schedule == "constant" and not cfg.flip
    assert [h["lr"] for h in result.history] == [pytest.approx(1e-3)] * 2  # no decay
    assert all(0 < h["train_seconds"] <= h["elapsed"] for h in result.history)
    # It learns, slowly: 0.51 measured, the same network untrained 0.25.
    assert result.metrics["rotation_accuracy"] >= untrained_figures(result.config)["rotation_accuracy"] + 0.15
    with pytest.raises(ValueError):
        seed_recipe("simclr")  # the seed has no label-free method


def test_siamese_pair_loss_choice_reaches_the_model():
    """SupCon trains a unit-sphere embedding; Hadsell's margin loss keeps raw distances."""
    from ssl_core.config import model_for

    supcon = model_for(TrainConfig(task="siamese", dataset="cifar10"))
    hadsell = model_for(TrainConfig(task="siamese", dataset="digits"))
    assert supcon.args.unit_embedding and supcon.args.head == "mlp" and supcon.args.feature_dim == 8 * supcon.args.width
    assert not hadsell.args.unit_embedding and hadsell.args.head == "linear"
    x = torch.randn(4, 3, 32, 32)
    supcon.eval()
    assert torch.allclose(supcon.embed(x).norm(dim=1), torch.ones(4), atol=1e-5)


def test_the_benchmark_refuses_a_misspelt_task_or_recipe_and_both_means_both(capsys):
    """`--recipes both` once ran the project's recipe alone, labelled "both": names are checked now."""
    import argparse

    from ssl_core.bench import comma_list

    recipes = comma_list(("project", "seed"), both=True)
    assert recipes("both") == ["project", "seed"] and recipes("seed") == ["seed"]
    assert comma_list(("rotation", "simclr", "siamese"))("rotation, siamese") == ["rotation", "siamese"]
    for wrong in ("projet", "project,both", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="choose from project, seed or both"):
            recipes(wrong)
    from ssl_core.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--to-accuracy", "--tasks", "rotaton"])
    assert exit_.value.code == 2 and "rotaton: choose from rotation, simclr, siamese" in capsys.readouterr().err
