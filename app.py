"""SSL Playground: a Gradio app over `ssl_core`.

Handlers first, then the layout (`with gr.Blocks()`), then the `__main__` guard. No training code
lives here: the background run is `ssl_core.jobs.TrainingJob`, the models answering are the
registry's active checkpoints (the shipped ones until a run in this app finishes), and every
number shown names its dataset, split and checkpoint.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import numpy as np

from ssl_core import TASKS
from ssl_core.archive import ArchiveError, resolve_data_folder, safe_extract_zip
from ssl_core.checkpoints import CheckpointError
from ssl_core.data import DataError
from ssl_core.evaluate import EVAL_PAIRS
from ssl_core import inference, plots, projection
from ssl_core.images import ImageError, to_pil
from ssl_core.jobs import ActiveModel, JobSnapshot, ModelRegistry, TrainingJob, format_seconds
from ssl_core.train import DEFAULT_BATCH, DEFAULT_EPOCHS, DEFAULT_LR, TrainConfig

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "assets" / "examples"
REGISTRY = ModelRegistry()
JOB = TrainingJob(REGISTRY)  # the one training run of this server, shared by every tab
TASK_TITLES = {"rotation": "rotation prediction (RotNet)", "siamese": "Siamese contrastive (pairs from labels)",
               "simclr": "SimCLR (no labels)"}
DATASET_CHOICES = [("digits (built in, offline)", "digits"), ("CIFAR-10 (downloads 170 MB once)", "cifar10"),
                   ("a folder on this server", "folder"), ("a .zip of your images", "zip")]
METRIC_LABELS = {
    "rotation_accuracy": "rotation accuracy (each test image in all 4 turns)",
    "knn_accuracy": "5-NN classification accuracy of the embedding",
    "pair_auc": "pair ROC-AUC (distance separates same/different class)",
    "pair_accuracy": "pair accuracy at the calibrated threshold",
}
NEIGHBOURS = 5


# ------------------------------------------------------------------------------------- helpers
def _active(task: str) -> ActiveModel:
    try:
        return REGISTRY.get(task)
    except CheckpointError as exc:
        raise gr.Error(f"No usable {task} model: {exc}") from exc


def _checkpoint_name(active: ActiveModel) -> str:
    path = active.checkpoint.path
    shipped = path.parent.resolve() == REGISTRY.shipped_dir.resolve()
    return f"`{path.name}` ({'shipped' if shipped else 'trained in this app'})"


def _split_note(card: dict) -> str:
    m = card.get("metrics", {})
    return f"{card['dataset']} test split, {m.get('test_images', '?')} held-out images"


def _model_line(active: ActiveModel) -> str:
    """Which model answered, on what data, and how good it is on held-out data."""
    card = active.checkpoint.card
    m = card.get("metrics", {})
    quality = ""
    if "rotation_accuracy" in m:
        quality = f" Held-out rotation accuracy {m['rotation_accuracy']:.1%}"
    elif "pair_auc" in m:
        quality = f" Held-out pair ROC-AUC {m['pair_auc']:.3f}"
    elif "knn_accuracy" in m:
        quality = f" Held-out kNN accuracy {m['knn_accuracy']:.1%}"
    if quality:
        quality += f" ({_split_note(card)})."
    note = f"\n\n**Note:** {active.note}" if active.note else ""
    return f"Answered by the **{card['task']}** model {_checkpoint_name(active)}, trained on **{card['dataset']}**.{quality}{note}"


def _big(image) -> Any:  # noqa: ANN001 - uint8 (3,32,32) tensor
    return to_pil(image, scale=4)


def _user_error(exc: Exception) -> gr.Error:
    # ImageError/DataError messages are written for users: show them as they are, no traceback.
    return gr.Error(str(exc), print_exception=False)


def _editor_image(value: Any) -> Optional[Any]:
    """The drawn picture of a Sketchpad value, or None when nothing has been drawn yet."""
    if not isinstance(value, dict):
        return value
    image = value.get("composite")
    if image is None:
        return None
    arr = np.asarray(image)
    if arr.size == 0 or (arr.ndim == 3 and arr.shape[2] == 4 and int(arr[..., 3].max()) == 0) or arr.min() == arr.max():
        return None  # fully transparent or one flat colour: an empty canvas
    return image


def _upload(value: Any) -> Any:
    """The file behind an image input. Image events run with preprocess=False: gr.Image would open
    every upload with PIL itself (and re-encode it as RGBA), and a file PIL cannot read would end
    as an unexplained "Error". Gradio still checks that the path is one of its uploads; decoding
    is left to images.to_model_image, the one decoding path, whose ImageError messages users see."""
    if isinstance(value, dict):
        return value.get("path")
    return value


# ------------------------------------------------------------------------------ rotation tab
def predict_rotation(image: Optional[str]) -> tuple[dict, Any, list, str]:
    """Predicted rotation of an image: angle probabilities, the image turned upright, the model's
    guess for each of the four turns of it, and which checkpoint answered."""
    image = _upload(image)
    if image is None:
        return {}, None, [], "Upload, paste or draw an image to see its predicted rotation."
    active = _active("rotation")
    try:
        p = inference.predict_rotation(active.checkpoint.model, image)
    except ImageError as exc:
        raise _user_error(exc) from exc
    gallery = [(_big(g.image), f"turned {inference.angle_name(g.turn)} → guess {inference.angle_name(g.predicted)} "
                f"({g.confidence:.0%}){'' if g.predicted == (p.k + g.turn) % 4 else ', inconsistent'}")
               for g in p.guesses]
    text = (f"The image looks turned **{p.angle}** counter-clockwise from upright "
            f"({p.probabilities[p.angle]:.0%} sure); turned back by {p.angle} it is shown upright.\n\n{_model_line(active)}")
    return p.probabilities, p.upright, gallery, text


def predict_sketch(value: Any) -> tuple[dict, Any, list, str]:
    image = _editor_image(value)
    if image is None:
        return {}, None, [], "Draw a digit (dark on white), in any orientation."
    return predict_rotation(image)


# ---------------------------------------------------------------------------- similarity tab
def _neighbour_gallery(ref: inference.Reference, emb: Any) -> list:
    return [(_big(n.image), f"{n.class_name} (d {n.distance:.2f})")
            for n in inference.nearest(ref, emb, NEIGHBOURS)]


def compare_pair(image_a: Optional[str], image_b: Optional[str], model: str = "siamese") -> tuple[Optional[float], str, list, list]:
    """Distance between two images in the encoder's embedding, the same/different verdict at the
    threshold calibrated for that checkpoint, and the five nearest held-out images to each."""
    image_a, image_b = _upload(image_a), _upload(image_b)
    if image_a is None or image_b is None:
        return None, "Give two images to compare.", [], []
    active = _active(model if model in TASKS else "siamese")
    ckpt = active.checkpoint
    threshold = inference.card_threshold(ckpt)
    try:
        r = inference.compare_pair(ckpt.model, image_a, image_b, threshold)
    except ImageError as exc:
        raise _user_error(exc) from exc
    m = ckpt.card.get("metrics", {})
    if r.same is None:
        verdict = (f"Distance **{r.distance:.3f}**. This {ckpt.card['task']} model has no calibrated same/different "
                   "threshold (only the siamese and SimCLR models are trained for distances).")
    else:
        word = "the **same class**" if r.same else "**different classes**"
        verdict = (f"Distance **{r.distance:.3f}** {'≤' if r.same else '>'} threshold {threshold:.3f}: probably {word}.\n\n"
                   f"What the threshold means: pairs closer than {threshold:.2f} are called same-class. It was chosen on "
                   f"training pairs; on {EVAL_PAIRS:,} held-out {ckpt.card['dataset']} pairs (test split) it gave "
                   f"{m.get('pair_accuracy', float('nan')):.1%} accuracy (ROC-AUC {m.get('pair_auc', float('nan')):.3f}).")
    verdict += f"\n\n{_model_line(active)}"
    try:
        ref = inference.reference(ckpt, active.key)
        return round(r.distance, 4), verdict, _neighbour_gallery(ref, r.emb_a), _neighbour_gallery(ref, r.emb_b)
    except DataError as exc:
        return round(r.distance, 4), verdict + f"\n\nNearest images unavailable: {exc}", [], []


# ---------------------------------------------------------------------------- embeddings tab
def _map_keys(active: ActiveModel) -> tuple[str, str]:
    """Cache keys of the trained and the random-init maps: per checkpoint weights and image set."""
    card = active.checkpoint.card
    data_id = f"{card['dataset']}/test/seed{card.get('config', {}).get('seed', 0)}"
    return (projection.map_key(card["weights_sha256"], data_id),
            projection.map_key(card["weights_sha256"], data_id + "/random-init"))


def _maps(active: ActiveModel, ref: inference.Reference, method: str) -> tuple[np.ndarray, np.ndarray]:
    idx = ref.map_index
    trained, untrained = ref.embeddings[idx].numpy(), ref.random_embeddings[idx].numpy()
    fn = projection.tsne_map if method == "tsne" else projection.pca_map
    key_trained, key_random = _map_keys(active)
    return fn(trained, key_trained), fn(untrained, key_random)


def _map_figure(active: ActiveModel, ref: inference.Reference, method: str, placed: Optional[list] = None):  # noqa: ANN202
    card = active.checkpoint.card
    m = card.get("metrics", {})
    xy_trained, xy_random = _maps(active, ref, method)
    knn, knn0 = m.get("knn_accuracy"), m.get("knn_accuracy_random_init")
    sub_t = f"trained {card['task']} encoder" + (f" · kNN acc {knn:.1%}" if knn is not None else "")
    sub_r = "untrained (random-init) encoder" + (f" · kNN acc {knn0:.1%}" if knn0 is not None else "")
    name = "t-SNE" if method == "tsne" else "PCA"
    labels = None if ref.test.labels is None else ref.test.labels[ref.map_index].numpy()
    title = f"{name} of {len(ref.map_index)} held-out {card['dataset']} images (test split) · checkpoint {active.checkpoint.path.name}"
    return plots.embedding_maps([(xy_trained, sub_t), (xy_random, sub_r)], labels, ref.test.class_names,
                                ref.map_index.numpy(), title, placed)


def _map_text(active: ActiveModel) -> str:
    card = active.checkpoint.card
    m = card.get("metrics", {})
    lines = [f"**{TASK_TITLES[card['task']]}**, checkpoint {_checkpoint_name(active)}, {_split_note(card)}:"]
    if "knn_accuracy" in m:
        lines.append(f"- 5-NN accuracy of the trained embedding: **{m['knn_accuracy']:.1%}**")
    if "knn_accuracy_random_init" in m:
        lines.append(f"- 5-NN accuracy of an untrained encoder (same architecture and seed): {m['knn_accuracy_random_init']:.1%}")
    if m.get("note"):
        lines.append(f"- {m['note']}")
    lines.append("\nColours are the true classes, which the self-supervised encoders never saw; hover a point for its "
                 "class and test-split index. Points that cluster by colour mean the encoder learned the classes.")
    if active.note:
        lines.append(f"\n**Note:** {active.note}")
    return "\n".join(lines)


def embedding_map(model: str) -> tuple[Any, Any, str]:
    """t-SNE and PCA maps of the held-out embeddings of the active `model` (rotation, siamese or
    simclr), trained encoder beside an untrained one, with the kNN accuracy of each."""
    if model not in TASKS:
        raise gr.Error(f"Unknown model {model!r}; choose one of {', '.join(TASKS)}.")
    active = _active(model)
    try:
        ref = inference.reference(active.checkpoint, active.key)
    except DataError as exc:
        raise _user_error(exc) from exc
    return _map_figure(active, ref, "tsne"), _map_figure(active, ref, "pca"), _map_text(active)


def place_on_map(model: str, image: Optional[str]) -> tuple[Any, str]:
    image = _upload(image)
    if image is None or model not in TASKS:
        return gr.skip(), "Upload an image to see where the encoder puts it."
    active = _active(model)
    try:
        emb = inference.embed_image(active.checkpoint.model, image)
        ref = inference.reference(active.checkpoint, active.key)
    except (ImageError, DataError) as exc:
        raise _user_error(exc) from exc
    model_rnd = inference.random_init_model(active.checkpoint)
    emb_rnd = inference.embed_image(model_rnd, image)
    _maps(active, ref, "tsne")  # make sure both maps exist before placing onto them
    key_trained, key_random = _map_keys(active)
    placed = [projection.place_points(key_trained, emb[None].numpy()), projection.place_points(key_random, emb_rnd[None].numpy())]
    near = inference.nearest(ref, emb, NEIGHBOURS)
    text = ("Your image (★) placed on each map. Its nearest held-out images in the trained embedding: "
            + ", ".join(f"{n.class_name} (#{n.index})" for n in near) + ".")
    return _map_figure(active, ref, "tsne", placed), text


# --------------------------------------------------------------------------------- train tab
def _who(request: Optional[gr.Request]) -> str:
    session = getattr(request, "session_hash", None) if request is not None else None
    return f"session {session[:6]}" if session else "an API client"


def start_training(task: str, dataset: str, epochs: Optional[float], batch_size: Optional[float] = None,
                   lr: Optional[float] = None, data_dir: Optional[str] = None, zip_file: Optional[str] = None,
                   request: gr.Request = None) -> str:
    """Start training `task` on `dataset` (digits, cifar10, folder with data_dir, or zip with zip_file)
    in the background. Refused, with a message naming the running job, while another run is active."""
    snap = JOB.snapshot()
    if snap.running:
        return f"Not started: {snap.describe()} is already training. Stop it first, or wait for it to finish."
    if task not in TASKS:
        return f"Unknown task {task!r}; choose one of {', '.join(TASKS)}."
    folder: Optional[str] = None
    try:
        if dataset == "folder":
            folder = str(resolve_data_folder(data_dir or ""))
        elif dataset == "zip":
            if not zip_file:
                return "Upload a .zip of images first (one sub-folder per class gives labels)."
            folder = str(safe_extract_zip(zip_file, JOB.runs_dir / "uploads"))
            dataset = "folder"
        elif dataset == "cifar10":
            folder = data_dir or None
        cfg = TrainConfig(task=task, dataset=dataset, data_dir=folder, epochs=_whole(epochs), batch_size=_whole(batch_size),
                          lr=float(lr) if lr else None)
    except (ArchiveError, DataError, ValueError) as exc:
        return f"Not started: {exc}"
    return JOB.start(cfg, who=_who(request))[1]


def _whole(x: Optional[float]) -> Optional[int]:
    """Number fields arrive as floats; 3.0 is 3, while 2.5 stays 2.5 so validation can refuse it."""
    if x is None or x == "":
        return None
    return int(x) if float(x).is_integer() else x  # type: ignore[return-value]


def stop_training() -> str:
    """Stop the running training within about a second; the previous model stays active."""
    return JOB.stop()


def training_status() -> dict:
    """The training job's live state: status, task, dataset, progress fraction, ETA in seconds,
    per-epoch history with the held-out probe, log, final metrics, checkpoint path, error."""
    return JOB.snapshot().to_dict()


def _progress_html(s: JobSnapshot) -> str:
    pct = 100.0 * s.fraction
    if s.status == "idle":
        label = "No training has run since the server started."
    elif s.status == "loading":
        label = f"loading {s.dataset}… {pct:.0f}%"
    else:
        eta = f" · about {format_seconds(s.eta)} left" if s.running and s.eta is not None else ""
        label = f"{s.status} · {pct:.0f}% · epoch {s.epoch}/{s.epochs} · step {s.step}/{s.total_steps}{eta}"
    return (f'<div class="ssl-progress" data-status="{s.status}"><div class="ssl-bar" style="width:{pct:.1f}%"></div>'
            f'<span>{html.escape(label)}</span></div>')


def _results_md(s: JobSnapshot) -> str:
    if s.status == "failed":
        return f"**Training failed:** {html.escape(s.error)}\n\nThe previous model is still active."
    if s.status == "stopped":
        return "**Stopped** before the end: nothing was saved, the previous model is still active."
    if s.status != "finished" or not s.metrics:
        return ""
    m = s.metrics
    rows = ["| held-out metric | trained | random-init encoder |", "| --- | --- | --- |"]
    for key, label in METRIC_LABELS.items():
        if key in m:
            base = m.get(f"{key}_random_init")
            rows.append(f"| {label} | **{m[key]:.1%}** | {'n/a' if base is None else f'{base:.1%}'} |")
    where = (f"Measured on the **{s.dataset} test split** ({m.get('test_images', '?')} held-out images; trained on "
             f"{m.get('train_images', '?')}). Checkpoint saved to `{s.checkpoint}`; it is now the active {s.task} model.")
    note = f"\n\n{m['note']}" if m.get("note") else ""
    return "**Finished.** " + where + "\n\n" + "\n".join(rows) + note


def _active_md() -> str:
    lines = ["**Models answering now** (the shipped ones until a run here finishes):"]
    for task in TASKS:
        try:
            a = REGISTRY.get(task)
            lines.append(f"- {task}: {_checkpoint_name(a)}, trained on {a.checkpoint.card['dataset']}"
                         + (f" — **note:** {a.note}" if a.note else ""))
        except CheckpointError as exc:
            lines.append(f"- {task}: unavailable ({exc})")
    return "\n".join(lines)


def _curves(s: JobSnapshot) -> tuple[Any, Any]:
    where = f"{s.task} on {s.dataset}" if s.task else "no run yet"
    baseline = {k[: -len("_random_init")]: v for k, v in s.metrics.items() if k.endswith("_random_init") and k.startswith("knn")}
    return (plots.loss_curve(s.loss_steps, s.losses, s.history, f"Training loss · {where}"),
            plots.metric_curve(s.history, f"Held-out probe after each epoch · {s.dataset or '-'} test split", baseline))


def poll(seen: int) -> tuple:
    """Timer tick of every open tab: redraw only when the job's state changed since this tab last saw it."""
    s = JOB.snapshot()
    if s.version == seen:
        return (gr.skip(),) * 8
    loss_fig, metric_fig = _curves(s)
    status = f"**{s.status}**" + (f" — {s.describe()}" if s.task else "")
    return (s.version, status, _progress_html(s), loss_fig, metric_fig, "\n".join(s.log), _results_md(s), _active_md())


def task_defaults(task: str) -> tuple[int, int, float]:
    return DEFAULT_EPOCHS[task], DEFAULT_BATCH[task], DEFAULT_LR[task]


def dataset_inputs(dataset: str) -> tuple[Any, Any]:
    return gr.update(visible=dataset in ("folder", "cifar10")), gr.update(visible=dataset == "zip")


# ------------------------------------------------------------------------------------ layout
CSS = """
.ssl-progress { position: relative; height: 30px; border-radius: 6px; background: var(--neutral-200, #e5e7eb); overflow: hidden; }
.ssl-bar { position: absolute; left: 0; top: 0; bottom: 0; background: var(--primary-500, #f97316); transition: width .4s; }
.ssl-progress span { position: relative; padding-left: 10px; line-height: 30px; font-weight: 600; }
#log textarea { font-family: var(--font-mono, monospace); font-size: 12px; }
/* Whole digits in the thumbnails: the gallery's default "cover" crops their tops and bottoms. */
.ssl-thumbs img { object-fit: contain !important; image-rendering: pixelated; }
"""


def _examples(*names: str) -> list[str]:
    return [str(EXAMPLES / n) for n in names if (EXAMPLES / n).is_file()]


with gr.Blocks(title="SSL Playground", analytics_enabled=False) as demo:  # offline machines: no phoning home
    gr.Markdown("# SSL Playground\nSelf-supervised learning on small images: **rotation prediction** (RotNet), a "
                "**Siamese** encoder trained with contrastive pairs (Hadsell et al. 2006), and **SimCLR** (no labels). "
                "Ready-trained models on scikit-learn's digits answer at once; train your own in the *Train* tab.")
    with gr.Tabs():
        with gr.Tab("Rotation"):
            gr.Markdown("Give an image in any orientation: the rotation model says how far it is turned "
                        "(counter-clockwise) and turns it back upright.")
            with gr.Row():
                with gr.Column():
                    with gr.Tabs():
                        with gr.Tab("Upload / paste"):
                            rot_image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard", "webcam"], height=280)
                            gr.Examples(_examples("digit-7-turned-90.png", "digit-2-turned-180.png", "digit-4-turned-270.png",
                                                  "digit-3-upright.png", "drawn-4-turned-90.png", "drawn-7-upright.png"),
                                        inputs=rot_image, label="Examples (held-out digits; the name says the true turn)")
                        with gr.Tab("Draw"):
                            sketch = gr.Sketchpad(type="pil", label="Draw a digit: pick the brush (left), then draw", canvas_size=(256, 256),
                                                  height=340, layers=False,
                                                  brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"))
                with gr.Column():
                    rot_label = gr.Label(num_top_classes=4, label="Predicted rotation (counter-clockwise)")
                    rot_upright = gr.Image(label="Turned back upright", height=200, interactive=False, format="png")
            gr.Markdown("**The model's guess for each of the four turns of your image** (what the model sees: 32×32 pixels)")
            rot_guesses = gr.Gallery(label="Guess per turn", show_label=False, elem_classes="ssl-thumbs", columns=4, rows=1, height=300, object_fit="contain", allow_preview=False, format="png")
            rot_info = gr.Markdown(label="Which model answered")

        with gr.Tab("Similarity"):
            gr.Markdown("Two images in, one distance out: the encoder maps each image to a vector; close vectors mean similar images.")
            sim_model = gr.Radio([("Siamese (trained on same/different-class pairs)", "siamese"),
                                  ("SimCLR (no labels)", "simclr"), ("Rotation encoder", "rotation")],
                                 value="siamese", label="Encoder")
            sim_model_state = gr.State("siamese")  # a state, so the API keeps exactly compare_pair(image_a, image_b)
            with gr.Row():
                image_a = gr.Image(type="filepath", label="Image A", height=220)
                image_b = gr.Image(type="filepath", label="Image B", height=220)
            gr.Examples([_examples("digit-3-upright.png", "digit-3-another.png"), _examples("digit-3-upright.png", "digit-8.png"),
                         _examples("digit-1.png", "digit-7-turned-90.png")],
                        inputs=[image_a, image_b], label="Example pairs (held-out digits)")
            compare_btn = gr.Button("Compare", variant="primary")
            distance = gr.Number(label="Distance between the embeddings", interactive=False, placeholder="give two images")
            verdict = gr.Markdown(label="Verdict")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("**Nearest held-out images to A** (class, distance)")
                    near_a = gr.Gallery(label="Nearest to A", show_label=False, columns=5, rows=1, height=150, elem_classes="ssl-thumbs", object_fit="contain",
                                        allow_preview=False, format="png")
                with gr.Column():
                    gr.Markdown("**Nearest held-out images to B** (class, distance)")
                    near_b = gr.Gallery(label="Nearest to B", show_label=False, columns=5, rows=1, height=150, elem_classes="ssl-thumbs", object_fit="contain",
                                        allow_preview=False, format="png")

        with gr.Tab("Embeddings") as embeddings_tab:
            gr.Markdown("Where each encoder puts the held-out images, flattened to 2-D: t-SNE (keeps neighbours) and PCA "
                        "(keeps the largest directions of variation). Left: the trained encoder; right: the same network untrained.")
            with gr.Row():
                map_model = gr.Radio(list(TASKS), value="siamese", label="Encoder")
                map_btn = gr.Button("Show maps", variant="primary")
            map_text = gr.Markdown(label="About these maps")
            tsne_plot = gr.Plot(label="t-SNE")
            pca_plot = gr.Plot(label="PCA")
            with gr.Row():
                place_image = gr.Image(type="filepath", label="Place your image on the t-SNE maps", height=200)
                place_text = gr.Markdown()

        with gr.Tab("Train"):
            with gr.Row():
                with gr.Column(scale=1):
                    task = gr.Radio([(TASK_TITLES[t], t) for t in TASKS], value="siamese", label="Task")
                    dataset = gr.Radio(DATASET_CHOICES, value="digits", label="Dataset")
                    data_dir = gr.Textbox(label="Folder (CIFAR-10: where to keep it; folder: one sub-folder per class)",
                                          visible=False, placeholder="/path/to/images")
                    zip_file = gr.File(label=".zip of images (sub-folders = classes)", file_types=[".zip"], type="filepath", visible=False)
                    with gr.Row():
                        epochs = gr.Number(value=DEFAULT_EPOCHS["siamese"], label="Epochs", precision=0, minimum=1, maximum=500)
                        batch_size = gr.Number(value=DEFAULT_BATCH["siamese"], label="Batch size", precision=0, minimum=2, maximum=4096)
                        lr = gr.Number(value=DEFAULT_LR["siamese"], label="Learning rate", minimum=1e-6, maximum=1.0)
                    with gr.Row():
                        start_btn = gr.Button("Start training", variant="primary")
                        stop_btn = gr.Button("Stop", variant="stop")
                    start_msg = gr.Markdown(label="Message")
                    active_md = gr.Markdown(_active_md())
                with gr.Column(scale=2):
                    job_status = gr.Markdown()
                    progress = gr.HTML()
                    with gr.Row():
                        loss_plot = gr.Plot(label="Training loss")
                        metric_plot = gr.Plot(label="Held-out probe")
                    results = gr.Markdown()
                    log = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, elem_id="log", interactive=False)
            seen_version = gr.State(-1)
            timer = gr.Timer(1.0)

    # ------------------------------------------------------------------------------ events
    rot_outputs = [rot_label, rot_upright, rot_guesses, rot_info]
    rot_image.change(predict_rotation, rot_image, rot_outputs, api_name="predict_rotation", show_progress="minimal", queue=False,
                     preprocess=False)
    sketch.change(predict_sketch, sketch, rot_outputs, api_visibility="private", show_progress="hidden",
                  trigger_mode="always_last")

    sim_model.change(lambda m: m, sim_model, sim_model_state, api_visibility="private")
    sim_outputs = [distance, verdict, near_a, near_b]
    compare_btn.click(compare_pair, [image_a, image_b, sim_model_state], sim_outputs, api_name="compare_pair", preprocess=False)
    for trigger in (image_a.change, image_b.change, sim_model.change):
        trigger(compare_pair, [image_a, image_b, sim_model], sim_outputs, api_visibility="private", show_progress="minimal",
                preprocess=False)

    map_btn.click(embedding_map, map_model, [tsne_plot, pca_plot, map_text], api_name="embedding_map")
    map_model.change(embedding_map, map_model, [tsne_plot, pca_plot, map_text], api_visibility="private")
    embeddings_tab.select(embedding_map, map_model, [tsne_plot, pca_plot, map_text], api_visibility="private")
    place_image.change(place_on_map, [map_model, place_image], [tsne_plot, place_text], api_visibility="private",
                       preprocess=False)

    task.change(task_defaults, task, [epochs, batch_size, lr], api_visibility="private")
    dataset.change(dataset_inputs, dataset, [data_dir, zip_file], api_visibility="private")
    start_btn.click(start_training, [task, dataset, epochs, batch_size, lr, data_dir, zip_file], start_msg,
                    api_name="start_training")
    stop_btn.click(stop_training, None, start_msg, api_name="stop_training")
    gr.api(training_status, api_name="training_status", queue=False)
    timer.tick(poll, seen_version, [seen_version, job_status, progress, loss_plot, metric_plot, log, results, active_md],
               api_visibility="private", show_progress="hidden", queue=False)  # a snapshot copy: no need to wait in line


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
