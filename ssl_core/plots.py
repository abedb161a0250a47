"""Plotly figures for the app: live training curves and embedding maps.

Pure functions of numbers -> `plotly.graph_objects.Figure`; no gradio, no models. Every figure
carries its dataset/split/checkpoint in the title, because a number without them misleads.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .evaluate import METRIC_BY_KEY, METRICS

# Ten well-separated colours (Tableau 10), one per class; more classes cycle.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def _short(key: str) -> str:
    """A metric's label without its explanation in brackets: legends have little room."""
    m = METRIC_BY_KEY.get(key)
    return m.label.split(" (")[0] if m else key.replace("_", " ")


def _layout(fig: go.Figure, title: str, height: int = 320) -> go.Figure:
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, template="plotly_white",
                      margin={"l": 50, "r": 20, "t": 50, "b": 45}, legend={"itemsizing": "constant"})
    return fig


def loss_curve(steps: Sequence[int], losses: Sequence[float], history: Sequence[dict], title: str) -> go.Figure:
    """Training loss per step (downsampled) and the mean loss of each finished epoch."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(steps), y=list(losses), mode="lines", name="loss per step", line={"width": 1.5}))
    steps_per_epoch = (steps[-1] / max(1, history[-1]["epoch"])) if history and steps else None
    if history and steps_per_epoch:
        fig.add_trace(go.Scatter(x=[h["epoch"] * steps_per_epoch for h in history], y=[h["loss"] for h in history],
                                 mode="markers+lines", name="epoch mean", marker={"size": 7}))
    fig.update_xaxes(title_text="optimisation step")
    fig.update_yaxes(title_text="training loss")
    return _layout(fig, title)


def metric_curve(history: Sequence[dict], title: str, baseline: Optional[dict] = None) -> go.Figure:
    """The held-out probe after each epoch (rotation or kNN accuracy), with the random-init level if known."""
    fig = go.Figure()
    keys = [m.key for m in METRICS if any(m.key in h for h in history)]
    for key in keys:
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers+lines",
                                 name=f"{_short(key)} (held-out)", marker={"size": 7}))
    # Only the untrained level of a metric the curve shows: a rotation curve beside the kNN baseline
    # read as "48% against 29%", two numbers that measure different things.
    baseline = {k: v for k, v in (baseline or {}).items() if k in keys}
    for key, value in baseline.items():
        fig.add_hline(y=value, line_dash="dot", line_color="#888",
                      annotation_text=f"random-init {_short(key)} {value:.1%}", annotation_position="bottom right")
    if not history:
        fig.add_annotation(text="measured after each epoch", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"color": "#888"})
    fig.update_xaxes(title_text="epoch", rangemode="tozero")
    # Zoom to where the numbers are: 96% vs 99% is the story, and a 0-100% axis flattens it.
    values = [h[k] for h in history for k in keys if k in h] + list(baseline.values())
    low = max(0.0, min(values) - 0.05) if values else 0.0
    fig.update_yaxes(title_text="held-out score", range=[low, 1.005], tickformat=".0%")
    return _layout(fig, title)


def _scatter_traces(xy: np.ndarray, labels: Optional[np.ndarray], class_names: Sequence[str],
                    indices: np.ndarray, show_legend: bool) -> list[go.Scattergl]:
    traces = []
    if labels is None:
        labels = np.full(len(xy), -1)
    for c in np.unique(labels):
        m = labels == c
        name = class_names[c] if 0 <= c < len(class_names) else ("unlabeled" if c < 0 else str(c))
        traces.append(go.Scattergl(
            x=xy[m, 0], y=xy[m, 1], mode="markers", name=name, legendgroup=name, showlegend=show_legend,
            marker={"size": 6, "color": PALETTE[int(c) % len(PALETTE)] if c >= 0 else "#888", "opacity": 0.8},
            customdata=np.stack([np.full(int(m.sum()), name), indices[m]], axis=1),
            hovertemplate="class %{customdata[0]}<br>test image #%{customdata[1]}<extra></extra>",
        ))
    return traces


def embedding_maps(maps: Sequence[tuple[np.ndarray, str]], labels: Optional[np.ndarray], class_names: Sequence[str],
                   indices: np.ndarray, title: str, placed: Optional[Sequence[np.ndarray]] = None) -> go.Figure:
    """Side-by-side 2-D maps of the same images (e.g. trained vs random-init encoder), coloured by class.

    `maps`: (xy (N,2), subtitle) per panel. Hover shows the class and the test-split index.
    `placed`: per panel, (M,2) positions of uploaded images, drawn as black stars.
    """
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=[sub for _, sub in maps], horizontal_spacing=0.06)
    for col, (xy, _) in enumerate(maps, start=1):
        for trace in _scatter_traces(np.asarray(xy), labels, class_names, np.asarray(indices), show_legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
        if placed is not None and len(placed[col - 1]):
            p = np.asarray(placed[col - 1])
            fig.add_trace(go.Scattergl(x=p[:, 0], y=p[:, 1], mode="markers", name="your image", showlegend=col == 1,
                                       legendgroup="your image",
                                       marker={"symbol": "star", "size": 18, "color": "black", "line": {"color": "white", "width": 1}},
                                       hovertemplate="your image<extra></extra>"), row=1, col=col)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    return _layout(fig, title, height=460)


ANGLES = ["0°", "90°", "180°", "270°"]


def frame_map(xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str], rows: np.ndarray, title: str) -> go.Figure:
    """One learning frame: the held-out sample's 2-D positions, coloured by class. The axes are
    fixed to the frames' box ([-1, 1]) and `uirevision` keeps a zoom, so frames replace each
    other in place and points are seen to travel."""
    fig = go.Figure(_scatter_traces(np.asarray(xy), np.asarray(labels), class_names, np.asarray(rows), show_legend=True))
    fig.update_xaxes(range=[-1.08, 1.08], showticklabels=False, zeroline=False)
    fig.update_yaxes(range=[-1.08, 1.08], showticklabels=False, zeroline=False)
    # Each class is its own legend group, and plotly puts a 10 px gap between groups: ten classes
    # then overflow a 420 px plot and the last ones hide behind a scroll bar.
    fig.update_layout(uirevision="frames")
    fig = _layout(fig, title, height=420)
    fig.update_layout(legend={"tracegroupgap": 2})
    return fig


def turn_confusion(counts: Sequence[Sequence[int]], title: str) -> go.Figure:
    """4x4 table of turns: row = the turn applied, column = the turn the model said; cells show
    the count and the share of the row."""
    c = np.asarray(counts, dtype=float)
    share = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    text = [[f"{int(c[i, j])}<br>{share[i, j]:.0%}" for j in range(4)] for i in range(4)]
    fig = go.Figure(go.Heatmap(z=share, x=ANGLES, y=ANGLES, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                               colorscale="Blues", showscale=False,
                               hovertemplate="turned %{y}, said %{x}: %{text}<extra></extra>"))
    # The predicted turns along the bottom: on top their axis title collides with the figure's title.
    fig.update_xaxes(title_text="predicted turn")
    fig.update_yaxes(title_text="turn applied", autorange="reversed")
    return _layout(fig, title, height=420)


def distance_histograms(distances: dict, title: str) -> go.Figure:
    """Held-out same-class and different-class pair distances as two overlaid histograms (share
    of each kind per bin), with the frame's calibrated threshold as a dashed line."""
    edges = np.asarray(distances["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    fig = go.Figure()
    for key, name, colour in (("same", "same class", "#59a14f"), ("different", "different class", "#e15759")):
        counts = np.asarray(distances[key], dtype=float)
        fig.add_trace(go.Bar(x=centres, y=counts / max(counts.sum(), 1), width=width, name=f"{name} pairs",
                             marker_color=colour, opacity=0.6, hovertemplate="distance %{x:.2f}: %{y:.1%}<extra></extra>"))
    fig.add_vline(x=distances["threshold"], line_dash="dash", line_color="#333",
                  annotation_text=f"threshold {distances['threshold']:.2f}", annotation_position="top")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="embedding distance", range=[0, float(edges[-1])])
    fig.update_yaxes(title_text="share of pairs", tickformat=".0%")
    return _layout(fig, title, height=420)
