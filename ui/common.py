"""What every tab shares: the models on offer, the one training job, where output pictures go,
and small helpers that turn ssl_core answers into Gradio values."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import gradio as gr

from ssl_core import replay
from ssl_core.errors import UserError
from ssl_core.images import write_png
from ssl_core.jobs import ModelRegistry, TrainingJob

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
REGISTRY = ModelRegistry()
JOB = TrainingJob(REGISTRY)  # the one training run of this server, shared by every tab
# Output pictures are written here under their content hash, atomically, and handed to Gradio as
# files: Gradio then copies each into its cache under a temporary name and renames it, so many
# visitors getting the same picture at once never see a file rewritten while it is served.
OUTPUTS = Path(tempfile.mkdtemp(prefix="ssl-playground-outputs-"))


def shows_user_errors(fn: Callable) -> Callable:
    """A UserError's message is written for people: show it as it is, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc

    return wrapper


def png(image: Any) -> str:
    return write_png(image, OUTPUTS)


def gallery(items: list) -> list:
    """(PIL image, caption) pairs -> (file, caption) pairs for a gr.Gallery."""
    return [(png(image), caption) for image, caption in items]


def upload(value: Any) -> Any:
    """The file behind an image input. Image events run with preprocess=False: gr.Image would open
    every upload with PIL itself (and re-encode it as RGBA), and a file PIL cannot read would end
    as an unexplained "Error". Gradio still checks that the path is one of its uploads; decoding
    is left to ssl_core.images, the one decoding path, whose ImageError messages users see."""
    return value.get("path") if isinstance(value, dict) else value


def picker(task: Optional[str], label: str) -> gr.Dropdown:
    """A model picker: every checkpoint on offer (of `task`, or all), the task's default chosen.
    Custom values pass through so the handler, not Gradio, answers an unknown name (clearly)."""
    return gr.Dropdown(REGISTRY.choices(task), value=REGISTRY.default_name(task or "siamese"), label=label,
                       allow_custom_value=True, scale=3)


def examples(*rows: tuple) -> list[list]:
    """Example rows whose files exist and whose model is on offer: (file, ..., model name); files
    are names in assets/examples. A photo model's examples appear once that model ships."""
    offered = set(REGISTRY.names())
    return [[str(EXAMPLES / v) if v.endswith(".png") else v for v in row] for row in rows
            if all((EXAMPLES / v).is_file() for v in row if v.endswith(".png")) and row[-1] in offered]


def thumbs(label: str) -> gr.Gallery:
    return gr.Gallery(label=label, show_label=False, columns=6, rows=1, height=150, elem_classes="ssl-thumbs",
                      object_fit="contain", allow_preview=False, format="png")


def frame_outputs(frames: list, number: int, name: str, images: Any = None) -> tuple:
    """(caption, map, task panel, picture map) of learning frame `number` (from 1, as the slider), for the replay components."""
    if not frames:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    v = replay.view(frames, int(number) - 1, name, images)
    return v.text, v.map, v.panel, None if v.picture is None else png(v.picture)


def frame_player(label: str) -> tuple:
    """The replay controls under a frame view: a frame slider, a play button and the timer that
    advances the slider while playing (Gradio 6 has no animation loop of its own). The slider
    counts from 1, as the captions do ("Frame 3 of 7")."""
    with gr.Row():
        slider = gr.Slider(1, 2, value=1, step=1, label=label, scale=4)
        play = gr.Button("▶ Play from the start", scale=1)
    return slider, play, gr.Timer(0.7, active=False)


def frame_view_components(picture_label: str) -> tuple:
    """Caption, map, task panel (turns table or distance histograms) and picture map of one frame."""
    text = gr.Markdown()
    with gr.Row():
        frame_map = gr.Plot(label="Held-out sample map")
        panel = gr.Plot(label="Turns or pair distances")
    picture = gr.Image(label=picture_label, interactive=False, height=420, format="png", elem_classes="ssl-picture")
    return text, frame_map, panel, picture
