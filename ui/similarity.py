"""Similarity tab: the distance of two images in an encoder's embedding, where each is like the other,
and their neighbours."""

from __future__ import annotations

from typing import Optional

import gradio as gr

from ssl_core import dataset_title, explain, inference, maps
from ssl_core.errors import UserError
from ssl_core.evaluate import EVAL_PAIRS, format_metric

from .common import REGISTRY, examples, gallery, picker, png, shows_user_errors, thumbs, upload


@shows_user_errors
def compare_pair(image_a: Optional[str], image_b: Optional[str], model: Optional[str] = None) -> tuple:
    """Distance between two images in `model`'s embedding (default the shipped CIFAR-10 siamese
    model), the same/different verdict at its calibrated threshold, and the five nearest held-out
    images to each."""
    image_a, image_b = upload(image_a), upload(image_b)
    if image_a is None or image_b is None:
        return None, "Give two images to compare.", [], []
    m = REGISTRY.load(model or "siamese")
    r = inference.compare_pair(m.checkpoint, image_a, image_b)
    metrics = m.card.get("metrics", {})
    if r.same is None:
        verdict = (f"Distance **{r.distance:.3f}**. This {m.card['task']} model has no calibrated same/different "
                   "threshold (only the siamese and SimCLR models are trained for distances).")
    else:
        word = "the **same class**" if r.same else "**different classes**"
        verdict = (f"Distance **{r.distance:.3f}** {'≤' if r.same else '>'} threshold {r.threshold:.3f}: probably {word}.\n\n"
                   f"What the threshold means: pairs closer than {r.threshold:.2f} are called same-class. It was chosen on "
                   f"training pairs; on {EVAL_PAIRS:,} held-out {dataset_title(m.card['dataset'])} pairs (test split) it gave "
                   f"{format_metric('pair_accuracy', metrics.get('pair_accuracy', float('nan')))} accuracy "
                   f"(ROC-AUC {format_metric('pair_auc', metrics.get('pair_auc', float('nan')))}).")
    verdict += f"\n\n{m.describe()}"
    try:
        return round(r.distance, 4), verdict, gallery(maps.neighbours(m, image_a)), gallery(maps.neighbours(m, image_b))
    except UserError as exc:  # a trained folder's images have gone: the distance still stands
        return round(r.distance, 4), verdict + f"\n\nNearest images unavailable: {exc}", [], []


@shows_user_errors
def explain_pair(image_a: Optional[str], image_b: Optional[str], model: Optional[str] = None) -> tuple:
    """Where each of two images is like the other in `model`'s embedding (default: the siamese default):
    a heat map per image of the regions that pull the two embeddings together, the
    numbers behind them, and why a model's maps are withheld when they fail the deletion check."""
    image_a, image_b = upload(image_a), upload(image_b)
    if image_a is None or image_b is None:
        return None, None, {}, ""
    e = explain.explain_pair(REGISTRY.load(model or "siamese"), image_a, image_b)
    map_a, map_b = (png(p) for p, _ in e.pictures) if e.shown else (None, None)
    return map_a, map_b, e.numbers, f"**Where each is like the other:** {e.about}"


with gr.Blocks() as tab:
    gr.Markdown("Two images in, one distance out: the encoder maps each image to a vector; close vectors mean similar images.")
    model = picker(None, "Encoder (task · data · held-out score)")
    with gr.Row():
        image_a = gr.Image(type="filepath", label="Image A", height=220, elem_id="pair-image-a")
        image_b = gr.Image(type="filepath", label="Image B", height=220, elem_id="pair-image-b")
    gr.Examples(examples(("photo-school-bus-a.png", "photo-school-bus-b.png", "photos-siamese"),
                         ("photo-school-bus-a.png", "photo-jellyfish-a.png", "photos-siamese"),
                         ("rendered-seaside-a.png", "rendered-seaside-b.png", "photos-siamese"),
                         ("cifar10-cat-a.png", "cifar10-cat-b.png", "cifar10-siamese"),
                         ("cifar10-cat-a.png", "cifar10-truck-a.png", "cifar10-siamese"),
                         ("digit-3-upright.png", "digit-3-another.png", "digits-siamese"),
                         ("digit-3-upright.png", "digit-8.png", "digits-siamese")),
                inputs=[image_a, image_b, model], label="Example pairs (held-out test images; two seaside photos rendered for this app)")
    compare_btn = gr.Button("Compare", variant="primary")
    with gr.Row():
        with gr.Column():
            distance = gr.Number(label="Distance between the embeddings", interactive=False, placeholder="give two images")
            verdict = gr.Markdown(label="Verdict")
        with gr.Column():
            with gr.Row():  # titles above, not on, the pictures: their colour bars are at their tops
                with gr.Column(min_width=160):
                    gr.Markdown("**A**: where it is like B")
                    map_a = gr.Image(show_label=False, height=240, interactive=False, format="png", elem_id="pair-map-a",
                                     buttons=[])
                with gr.Column(min_width=160):
                    gr.Markdown("**B**: where it is like A")
                    map_b = gr.Image(show_label=False, height=240, interactive=False, format="png", elem_id="pair-map-b",
                                     buttons=[])
            map_about = gr.Markdown()
            with gr.Accordion("Numbers behind the maps", open=False):
                map_numbers = gr.JSON(label="explain_pair")
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Nearest held-out images to A** (class, distance)")
            near_a = thumbs("Nearest to A")
        with gr.Column():
            gr.Markdown("**Nearest held-out images to B** (class, distance)")
            near_b = thumbs("Nearest to B")

    inputs, outputs = [image_a, image_b, model], [distance, verdict, near_a, near_b]
    map_outputs = [map_a, map_b, map_numbers, map_about]
    compare_btn.click(compare_pair, inputs, outputs, api_name="compare_pair", preprocess=False)
    compare_btn.click(explain_pair, inputs, map_outputs, api_name="explain_pair", preprocess=False)
    # One listener per answer for the three triggers, last values winning: an example sets both images and
    # the model at once, and separate events finishing in any order left a distance for another pair shown.
    for fn, outs in ((compare_pair, outputs), (explain_pair, map_outputs)):
        gr.on([image_a.change, image_b.change, model.change], fn, inputs, outs, api_visibility="private",
              show_progress="minimal", preprocess=False, trigger_mode="always_last")
