"""Embeddings tab: an encoder's held-out images as maps, the images drawn at their places."""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from ssl_core import maps, replay

from .common import (OUTPUTS, REGISTRY, frame_outputs, frame_player, frame_view_components, gallery, picker, png,
                     shows_user_errors, thumbs, upload)


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


@shows_user_errors
def learning_frames(model: Optional[str] = None) -> list[dict]:
    """The learning frames recorded while `model` trained (default the shipped CIFAR-10 SimCLR
    model; a bare task name means that task's default): one dict per frame with epoch, step,
    knn_accuracy and points [x, y, class index] of its held-out sample; [] when none were recorded."""
    return [f.to_dict() for f in REGISTRY.learning_frames(model)]


@shows_user_errors
def replay_frame(model: Optional[str], number: float = 1) -> tuple:
    """Frame `number` (from 1) of the picked model's recorded frames, or a message that it has none."""
    loaded = REGISTRY.load(model or "siamese")
    frames = REGISTRY.learning_frames(loaded.name)
    if not frames:
        return (f"`{loaded.name}` has no recorded learning frames: it was trained before runs recorded them. "
                "Runs trained now (Train tab or the command line) keep theirs.", None, None, None, gr.update(maximum=2, value=1))
    shown = frame_outputs(frames, number, loaded.name, replay.sample_images(loaded, frames))
    return (replay.knn_story(frames) + "\n\n" + shown[0], *shown[1:],
            gr.update(maximum=max(2, len(frames)), value=min(int(number), len(frames))))


def play_step(model: Optional[str], number: float) -> tuple:
    nxt = int(number) + 1
    shown = replay_frame(model, nxt)
    return (nxt, *shown[:4], gr.Timer(active=nxt < shown[4].get("maximum", 0)))


@shows_user_errors
def export_projector(model: Optional[str]) -> list[str]:
    """The held-out sample's embeddings as TensorBoard Embedding Projector files (vectors, metadata)."""
    loaded = REGISTRY.load(model or "siamese")
    return [str(p) for p in replay.projector_files(loaded, OUTPUTS / "projector", REGISTRY.learning_frames(loaded.name))]


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
            place_image = gr.Image(type="filepath", label="Place your own image on the maps", height=200, elem_id="place-image")
            place_text = gr.Markdown()
            place_near = thumbs("Nearest held-out images to yours")
    tsne_plot = gr.Plot(label="t-SNE")
    pca_plot = gr.Plot(label="PCA")
    gr.Markdown("### How this model learned\nThe frames recorded while it trained: a fixed held-out sample, from the "
                "untrained encoder to the last epoch.")
    learn_text, learn_map, learn_panel, learn_picture = frame_view_components("The sample's images at their places (this frame)")
    learn_slider, learn_play, learn_timer = frame_player("Frame (drag to replay)")
    with gr.Row():
        export_btn = gr.Button("Export the held-out sample for TensorBoard's Embedding Projector", scale=2)
        export_files = gr.File(label="vectors.tsv and metadata.tsv (load both at projector.tensorflow.org)",
                               file_count="multiple", interactive=False, scale=3)

    outputs = [tsne_plot, pca_plot, text, mosaic]
    show_btn.click(embedding_map, model, outputs, api_name="embedding_map")
    model.change(embedding_map, model, outputs, api_visibility="private")
    mosaic.select(show_point, model, [point_gallery, point_text], api_visibility="private")
    place_image.change(place_on_map, [model, place_image], [tsne_plot, mosaic, place_near, place_text],
                       api_visibility="private", preprocess=False)
    learn_views = [learn_text, learn_map, learn_panel, learn_picture]
    replay_outputs = [*learn_views, learn_slider]
    for trigger in (show_btn.click, model.change):
        trigger(replay_frame, model, replay_outputs, api_visibility="private")
    learn_slider.release(replay_frame, [model, learn_slider], replay_outputs, api_visibility="private", show_progress="hidden")
    learn_play.click(lambda m: (1, *replay_frame(m, 1)[:4], gr.Timer(active=True)), model,
                     [learn_slider, *learn_views, learn_timer], api_visibility="private")
    learn_timer.tick(play_step, [model, learn_slider], [learn_slider, *learn_views, learn_timer], api_visibility="private",
                     show_progress="hidden")
    export_btn.click(export_projector, model, export_files, api_visibility="private")
    gr.api(learning_frames, api_name="learning_frames", queue=False)
