"""SSL Playground: a Gradio app over `ssl_core`.

The tabs live in `ui/` (one module each: handlers, layout, their own wiring); this file renders
them into one page, wires what crosses tabs (a finished run offered to the model pickers), names
the API and launches. The models on offer are `ssl_core.registry`'s: every shipped checkpoint and
every run finished here, picked per tab; the default is the shipped photo model of a task
(CIFAR-10's until the photo models ship).
"""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

from ui import embeddings, rotation, similarity, train
from ui.common import EXAMPLES, JOB, REGISTRY

# The API as documented (README): the handlers, importable from here for scripts and tests.
predict_rotation, compare_pair, embedding_map = rotation.predict_rotation, similarity.compare_pair, embeddings.embedding_map
learning_frames = embeddings.learning_frames
explain_rotation, explain_pair = rotation.explain_rotation, similarity.explain_pair
__all__ = ["EXAMPLES", "JOB", "REGISTRY", "compare_pair", "demo", "embedding_map", "explain_pair", "explain_rotation", "launch",
           "learning_frames", "list_models", "predict_rotation"]

CSS = """
.ssl-progress { position: relative; height: 30px; border-radius: 6px; background: var(--neutral-200, #e5e7eb); overflow: hidden; }
.ssl-bar { position: absolute; left: 0; top: 0; bottom: 0; background: var(--primary-500, #f97316); transition: width .4s; }
.ssl-progress span { position: relative; padding-left: 10px; line-height: 30px; font-weight: 600; }
#log textarea { font-family: var(--font-mono, monospace); font-size: 12px; }
/* Whole pictures in the thumbnails (the gallery's default "cover" crops them), pixels kept crisp. */
.ssl-thumbs img, #mosaic img, .ssl-picture img { object-fit: contain !important; image-rendering: pixelated; }
"""


def list_models() -> list[str]:
    """The checkpoint names on offer: the six shipped ones, then runs finished on this server."""
    return REGISTRY.names()


def answered_by() -> str:
    """Which data the default models learned from, read off their cards: the Tiny ImageNet photo
    models once they ship, the CIFAR-10 ones until then (registry.DEFAULT_FAMILIES), per tab while
    only some photo models have shipped."""
    photos_text = "photographs** (Tiny ImageNet, 202 kinds of things, 64 px)"
    cifar_text = "CIFAR-10** photos (32 px)"
    tabs = {"Rotation": "rotation", "Similarity": "siamese"}
    photo = {tab: "Tiny ImageNet" in REGISTRY.entry(None, task).card.get("dataset_source", "") for tab, task in tabs.items()}
    if all(photo.values()) or not any(photo.values()):
        return f"Models trained on **{photos_text if any(photo.values()) else cifar_text} answer by default."
    first, second = sorted(tabs, key=lambda tab: not photo[tab])
    return (f"By default *{first}* answers with a model trained on **{photos_text}, *{second}* with one "
            f"trained on **{cifar_text}.")


with gr.Blocks(title="SSL Playground", analytics_enabled=False) as demo:  # offline machines: no phoning home
    gr.Markdown("# SSL Playground\nSelf-supervised learning on images: **rotation prediction** (RotNet), a "
                "**Siamese** encoder trained on same/different-class pairs (Hadsell et al. 2006; for photos every "
                "pair in the batch at once, as SupCon does), and **SimCLR** (no labels). " + answered_by() +
                " The other shipped models (CIFAR-10 thumbnails, handwritten **digits**) are in each tab's model "
                "picker, next to any run you train in the *Train* tab.")
    with gr.Tabs():
        with gr.Tab("Rotation"):
            rotation.tab.render()
        with gr.Tab("Similarity"):
            similarity.tab.render()
        with gr.Tab("Embeddings") as embeddings_tab:
            embeddings.tab.render()
        with gr.Tab("Train") as train_tab:
            train.tab.render()

    pickers = [rotation.model, similarity.model, embeddings.model]
    embeddings_tab.select(embeddings.embedding_map, embeddings.model, embeddings.outputs, api_visibility="private")
    embeddings_tab.select(embeddings.replay_frame, embeddings.model, embeddings.replay_outputs, api_visibility="private")
    train.use_btn.click(train.use_finished_run, None, pickers, api_visibility="private")
    train.timer.tick(train.poll, [train.seen_version, train.seen_frames], train.job_outputs + pickers, api_visibility="private",
                     show_progress="hidden", queue=False)  # a snapshot copy: no need to wait in line
    demo.load(train.refresh_pickers, None, pickers, api_visibility="private", queue=False)
    # What the form's run costs here, before anything is changed: on opening the tab, so only a visitor
    # who may train pays for timing a few steps (once per server and encoder; milliseconds for digits).
    train_tab.select(train.run_cost, train.cost_inputs, train.cost, api_visibility="private")
    gr.api(list_models, api_name="list_models", queue=False)


LAUNCH_KWARGS: dict[str, Any] = {
    "theme": gr.themes.Soft(),
    "css": CSS,
    # Zips of whole data sets need room; single images are held to images.MAX_BYTES when decoded.
    "max_file_size": "200mb",
    "allowed_paths": [str(EXAMPLES)],
}


def launch(**kwargs: Any) -> tuple:
    """Queue bounded so a burst of visitors waits in line instead of piling threads on the CPU."""
    demo.queue(max_size=64, default_concurrency_limit=4)
    return demo.launch(**{**LAUNCH_KWARGS, **kwargs})


if __name__ == "__main__":
    # Spaces sets GRADIO_SERVER_NAME=0.0.0.0; locally the app stays on 127.0.0.1 unless asked.
    launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
