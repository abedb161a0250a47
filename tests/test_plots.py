"""Figures carry the data they are given, with class/index hover and labelled titles."""

from __future__ import annotations

import numpy as np

from ssl_core import plots


def test_loss_and_metric_curves() -> None:
    history = [{"epoch": 1, "loss": 0.5, "knn_accuracy": 0.9}, {"epoch": 2, "loss": 0.3, "knn_accuracy": 0.95}]
    fig = plots.loss_curve([1, 2, 3, 4], [0.8, 0.6, 0.4, 0.3], history, "Training loss · siamese on digits")
    assert list(fig.data[0].y) == [0.8, 0.6, 0.4, 0.3] and list(fig.data[1].y) == [0.5, 0.3]
    assert "digits" in fig.layout.title.text
    fig = plots.metric_curve(history, "Held-out probe · digits test split", {"knn_accuracy": 0.96})
    assert list(fig.data[0].y) == [0.9, 0.95] and "held-out" in fig.data[0].name
    assert "random-init" in fig.layout.annotations[0].text
    # A rotation run's curve is rotation accuracy: the kNN baseline is not drawn beside it as if comparable.
    turns = plots.metric_curve([{"epoch": 1, "rotation_accuracy": 0.48}], "Held-out probe", {"knn_accuracy": 0.29})
    assert not turns.layout.annotations and not turns.layout.shapes
    empty = plots.loss_curve([], [], [], "no run yet")  # before any run: an empty, valid figure
    assert len(empty.data) == 1


def test_embedding_maps_side_by_side_with_hover() -> None:
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(30, 2))
    labels = np.repeat(np.arange(3), 10)
    fig = plots.embedding_maps([(xy, "trained"), (xy * 2, "random-init")], labels, ["a", "b", "c"], np.arange(100, 130),
                               "t-SNE · digits test split", placed=[np.zeros((1, 2)), np.ones((1, 2))])
    traces = [t for t in fig.data if t.name != "your image"]
    assert len(traces) == 6 and sum(t.showlegend for t in traces) == 3
    first = traces[0]
    assert first.name == "a" and len(first.x) == 10
    assert "class" in first.hovertemplate and list(first.customdata[0]) == ["a", "100"]
    stars = [t for t in fig.data if t.name == "your image"]
    assert len(stars) == 2 and stars[0].marker.symbol == "star"
    assert [a.text for a in fig.layout.annotations] == ["trained", "random-init"]
