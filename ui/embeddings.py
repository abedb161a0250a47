"""Embeddings tab: an encoder's held-out images as maps, the images drawn at their places."""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from ssl_core import maps

from .common import REGISTRY, gallery, picker, png, shows_user_errors, thumbs, upload


@shows_user_errors
def embedding_map(model: Optional[str] = None) -> tuple[Any, Any, str, Any]:
    """t-SNE and PCA maps of the held-out images as embedded by `model` (default the shipped
    CIFAR-10 siamese model), trained beside untrained, a caption with the kNN probes, and the
    held-out images drawn at their places on the trained t-SNE map."""
    view = maps.show(REGISTRY.load(model or "siamese"))
    return view.tsne, view.pca, view.text, png(view.mosaic)


@shows_user_errors
def place_on_map(model: Optional[str], image: Optional[str]) -> tuple[Any, Any, list, str]:
    image = upload(image)
    if image is None:
        return gr.skip(), gr.skip(), [], "Upload an image to see where the encoder puts it."
    placed = maps.place(REGISTRY.load(model or "siamese"), image)
    return placed.tsne, png(placed.mosaic), gallery(placed.neighbours), placed.text


@shows_user_errors
def show_point(model: Optional[str], evt: gr.SelectData) -> tuple[list, str]:
    images, text = maps.point_at(REGISTRY.load(model or "siamese"), *evt.index)
    return gallery(images), text


with gr.Blocks() as tab:
    gr.Markdown("Where an encoder puts the held-out images: the images themselves at their places on a t-SNE map "
                "(click one), then t-SNE (keeps neighbours) and PCA (keeps the largest directions of variation), "
                "each with the trained encoder on the left and the same network untrained on the right.")
    with gr.Row():
        model = picker(None, "Encoder (task · data · held-out score)")
        show_btn = gr.Button("Show maps", variant="primary", scale=1)
    text = gr.Markdown(label="About these maps")
    with gr.Row():
        mosaic = gr.Image(label="Held-out images at their places (trained encoder, t-SNE); click an image",
                          interactive=False, elem_id="mosaic", height=640, scale=3, format="png")
        with gr.Column(scale=2):
            point_text = gr.Markdown("Click the picture map to see an image and its nearest neighbours.")
            point_gallery = thumbs("Clicked image and its nearest neighbours")
            place_image = gr.Image(type="filepath", label="Place your own image on the maps", height=200)
            place_text = gr.Markdown()
            place_near = thumbs("Nearest held-out images to yours")
    tsne_plot = gr.Plot(label="t-SNE")
    pca_plot = gr.Plot(label="PCA")

    outputs = [tsne_plot, pca_plot, text, mosaic]
    show_btn.click(embedding_map, model, outputs, api_name="embedding_map")
    model.change(embedding_map, model, outputs, api_visibility="private")
    mosaic.select(show_point, model, [point_gallery, point_text], api_visibility="private")
    place_image.change(place_on_map, [model, place_image], [tsne_plot, mosaic, place_near, place_text],
                       api_visibility="private", preprocess=False)
