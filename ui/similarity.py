"""Similarity tab: the distance of two images in an encoder's embedding, and their neighbours."""

from __future__ import annotations

from typing import Optional

import gradio as gr

from ssl_core import inference, maps
from ssl_core.errors import UserError
from ssl_core.evaluate import EVAL_PAIRS, format_metric

from .common import REGISTRY, examples, gallery, picker, shows_user_errors, thumbs, upload


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
                   f"training pairs; on {EVAL_PAIRS:,} held-out {m.card['dataset']} pairs (test split) it gave "
                   f"{format_metric('pair_accuracy', metrics.get('pair_accuracy', float('nan')))} accuracy "
                   f"(ROC-AUC {format_metric('pair_auc', metrics.get('pair_auc', float('nan')))}).")
    verdict += f"\n\n{m.describe()}"
    try:
        return round(r.distance, 4), verdict, gallery(maps.neighbours(m, image_a)), gallery(maps.neighbours(m, image_b))
    except UserError as exc:  # a trained folder's images have gone: the distance still stands
        return round(r.distance, 4), verdict + f"\n\nNearest images unavailable: {exc}", [], []


with gr.Blocks() as tab:
    gr.Markdown("Two images in, one distance out: the encoder maps each image to a vector; close vectors mean similar images.")
    model = picker(None, "Encoder (task · data · held-out score)")
    with gr.Row():
        image_a = gr.Image(type="filepath", label="Image A", height=220)
        image_b = gr.Image(type="filepath", label="Image B", height=220)
    gr.Examples(examples(("cifar10-cat-a.png", "cifar10-cat-b.png", "cifar10-siamese"),
                         ("cifar10-cat-a.png", "cifar10-truck-a.png", "cifar10-siamese"),
                         ("digit-3-upright.png", "digit-3-another.png", "digits-siamese"),
                         ("digit-3-upright.png", "digit-8.png", "digits-siamese")),
                inputs=[image_a, image_b, model], label="Example pairs (held-out test images)")
    compare_btn = gr.Button("Compare", variant="primary")
    distance = gr.Number(label="Distance between the embeddings", interactive=False, placeholder="give two images")
    verdict = gr.Markdown(label="Verdict")
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Nearest held-out images to A** (class, distance)")
            near_a = thumbs("Nearest to A")
        with gr.Column():
            gr.Markdown("**Nearest held-out images to B** (class, distance)")
            near_b = thumbs("Nearest to B")

    inputs, outputs = [image_a, image_b, model], [distance, verdict, near_a, near_b]
    compare_btn.click(compare_pair, inputs, outputs, api_name="compare_pair", preprocess=False)
    for trigger in (image_a.change, image_b.change, model.change):
        trigger(compare_pair, inputs, outputs, api_visibility="private", show_progress="minimal", preprocess=False)
