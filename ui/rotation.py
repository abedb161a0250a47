"""Rotation tab: how far an image is turned, by a rotation model the visitor picks, and where the
model looks for its answer (for the upload and each further turn)."""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr
import numpy as np

from ssl_core import explain, inference
from ssl_core.images import to_pil

from .common import REGISTRY, examples, gallery, picker, png, shows_user_errors, upload


@shows_user_errors
def predict_rotation(image: Optional[str], model: Optional[str] = None) -> tuple[dict, Any, list, str]:
    """Predicted rotation of an image by a rotation `model` (a name from list_models; default the
    registry's: the shipped photo model, CIFAR-10's until one ships): angle probabilities (the vote
    over four turns), the image turned upright, the guess for each of four further turns (flagged
    when inconsistent), and which checkpoint answered."""
    image = upload(image)
    if image is None:
        return {}, None, [], "Upload, paste or draw an image to see its predicted rotation."
    m = REGISTRY.load(model, "rotation")
    p = inference.predict_rotation(m.checkpoint, image)
    turns = [(to_pil(g.image, 4), f"turned {inference.angle_name(g.turn)} → guess {inference.angle_name(g.predicted)} "
              f"({g.confidence:.0%}){'' if g.consistent else ', inconsistent'}") for g in p.guesses]
    alone = max(p.single, key=p.single.get)
    text = (f"The image looks turned **{p.angle}** counter-clockwise from upright ({p.probabilities[p.angle]:.0%} sure, "
            f"the vote of the four turns below; the image as given, alone, says {alone}, {p.single[alone]:.0%}); "
            f"turned back by {p.angle} it is shown upright.\n\n{m.describe()}")
    return p.probabilities, png(p.upright), gallery(turns), text


@shows_user_errors
def explain_rotation(image: Optional[str], model: Optional[str] = None) -> tuple[Any, list, dict, str]:
    """Where a rotation `model` looks for its answer (default: the rotation default): a heat map over
    the image, the same for each of four further turns, the numbers behind them, and why a model's maps
    are withheld when they fail the deletion check."""
    image = upload(image)
    if image is None:
        return None, [], {}, ""
    e = explain.explain_rotation(REGISTRY.load(model, "rotation"), image)
    return png(e.pictures[0][0]) if e.shown else None, gallery(e.pictures), e.numbers, f"**Where it looks:** {e.about}"


def sketch_image(value: Any) -> Optional[Any]:
    """The drawn picture of a Sketchpad value, or None when nothing has been drawn yet."""
    image = value.get("composite") if isinstance(value, dict) else value
    arr = None if image is None else np.asarray(image)
    if arr is None or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] == 4 and int(arr[..., 3].max()) == 0) or arr.min() == arr.max():
        return None  # fully transparent or one flat colour: an empty canvas
    return image


def predict_sketch(value: Any, model: Optional[str] = None) -> tuple[dict, Any, list, str]:
    image = sketch_image(value)
    if image is None:
        return {}, None, [], "Draw a digit in any orientation (a digits model answers drawings)."
    return predict_rotation(image, model)


def explain_sketch(value: Any, model: Optional[str] = None) -> tuple[Any, list, dict, str]:
    image = sketch_image(value)
    return (None, [], {}, "") if image is None else explain_rotation(image, model)


with gr.Blocks() as tab:
    gr.Markdown("Give a photo (or a digit, with a digits model) in any orientation: the rotation model says how far "
                "it is turned (counter-clockwise) and turns it back upright.")
    model = picker("rotation", "Rotation model (task · data · held-out score)")
    with gr.Row():
        with gr.Column():
            with gr.Tabs():
                with gr.Tab("Upload / paste"):
                    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"], height=280)
                with gr.Tab("Draw a digit") as draw_tab:
                    sketch = gr.Sketchpad(type="pil", label="Draw a digit: pick the brush (left), then draw", canvas_size=(256, 256),
                                          height=340, layers=False,
                                          brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"))
        with gr.Column():
            label = gr.Label(num_top_classes=4, label="Predicted rotation (counter-clockwise)")
            with gr.Row():
                upright = gr.Image(label="Turned back upright", height=260, interactive=False, format="png")
                with gr.Column(min_width=160):  # a title above, not on, the picture: its colour bar is at its top
                    gr.Markdown("**Where it looks** (as given)")
                    looks = gr.Image(show_label=False, height=230, interactive=False, format="png", elem_id="rotation-looks", buttons=[])
    gr.Examples(examples(("rendered-meadow-turned-90.png", "photos-rotation"), ("rendered-street-upright.png", "photos-rotation"),
                         ("rendered-seaside-turned-180.png", "photos-rotation"), ("rendered-mug-turned-270.png", "photos-rotation"),
                         ("rendered-street-cropped-turned-90.png", "photos-rotation"),
                         ("photo-school-bus-turned-90.png", "photos-rotation"), ("photo-monarch-upright.png", "photos-rotation"),
                         ("photo-king-penguin-turned-180.png", "photos-rotation"),
                         ("cifar10-cat-turned-90.png", "cifar10-rotation"), ("cifar10-ship-upright.png", "cifar10-rotation"),
                         ("cifar10-horse-turned-180.png", "cifar10-rotation"), ("cifar10-airplane-turned-270.png", "cifar10-rotation"),
                         ("cifar10-truck-turned-90.png", "cifar10-rotation"), ("digit-7-turned-90.png", "digits-rotation"),
                         ("digit-5-light-on-dark-turned-180.png", "digits-rotation"), ("drawn-4-turned-90.png", "digits-rotation")),
                inputs=[image, model], label="Examples: photos rendered for this app (whole and cropped), held-out Tiny ImageNet and "
                      "CIFAR-10 photos, digits (the name says the true turn)")
    gr.Markdown("**The model's guess for each of four further turns of your image** (what the model sees: the picture at its input size, 32 px for CIFAR-10 and 64 px for photo models)")
    guesses = gr.Gallery(label="Guess per turn", show_label=False, elem_classes="ssl-thumbs", columns=4, rows=1, height=300,
                         object_fit="contain", allow_preview=False, format="png")
    gr.Markdown("**Where it looks for each turn**: red is what drove that turn's own guess most (the answer above is "
                "their vote); when the model follows the turn, the map turns with the picture")
    turn_maps = gr.Gallery(label="Where it looks per turn", show_label=False, elem_classes="ssl-thumbs", columns=4, rows=1,
                           height=300, object_fit="contain", allow_preview=False, format="png", elem_id="rotation-turn-maps")
    looks_about = gr.Markdown()
    with gr.Accordion("Numbers behind the maps", open=False):
        looks_numbers = gr.JSON(label="explain_rotation")
    info = gr.Markdown(label="Which model answered")

    outputs = [label, upright, guesses, info]
    map_outputs = [looks, turn_maps, looks_numbers, looks_about]
    # One listener per answer for both triggers, last values winning: an example sets the image and the
    # model at once, and two separate events could finish in either order, leaving one input's answer shown.
    gr.on([image.change, model.change], predict_rotation, [image, model], outputs, api_name="predict_rotation",
          show_progress="minimal", preprocess=False, trigger_mode="always_last")
    gr.on([image.change, model.change], explain_rotation, [image, model], map_outputs, api_name="explain_rotation",
          show_progress="minimal", preprocess=False, trigger_mode="always_last")
    sketch.change(predict_sketch, [sketch, model], outputs, api_visibility="private", show_progress="hidden",
                  trigger_mode="always_last")
    sketch.change(explain_sketch, [sketch, model], map_outputs, api_visibility="private", show_progress="hidden",
                  trigger_mode="always_last")
    draw_tab.select(lambda: "digits-rotation", None, model, api_visibility="private")  # drawings are digits
