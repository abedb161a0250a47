"""Train tab: the one background run, its live curves, and using a finished run in the other tabs."""

from __future__ import annotations

import html
from typing import Any, Optional

import gradio as gr

from ssl_core import TASK_TITLES, TASKS, dataset_title, plots
from ssl_core.config import FORM_IMAGE_SIZES, PHOTO_FORM_DATASETS
from ssl_core.cost import describe_run
from ssl_core.evaluate import METRICS, format_metric
from ssl_core.jobs import JobSnapshot, format_seconds
from ssl_core.recipes import recipe_for

from .common import JOB, REGISTRY, frame_outputs, frame_player, frame_view_components

IMAGE_SIZE_CHOICES = list(zip(("32 px (fast; CIFAR-10's size)",
                               "64 px (the photo models' size; a strided first layer keeps the cost of 32 px)"), FORM_IMAGE_SIZES))
DATASET_CHOICES = [("digits (built in, offline)", "digits"), ("CIFAR-10 (downloads 170 MB once)", "cifar10"),
                   ("a folder on this server", "folder"), ("a .zip of your images", "zip")]


def start_training(task: str, dataset: str, epochs: Optional[float], batch_size: Optional[float] = None,
                   lr: Optional[float] = None, data_dir: Optional[str] = None, zip_file: Optional[str] = None,
                   minutes: Optional[float] = None, resume: Optional[str] = None, image_size: Optional[float] = None,
                   request: gr.Request = None) -> str:
    """Start training `task` on `dataset` (digits, cifar10, folder with data_dir, or zip with zip_file)
    in the background, for `epochs`, or for `minutes` of wall clock when given (capped on a public
    Space), at `image_size` px: 32 (the default) or, for a folder or zip of photos, 64. `resume`
    names a stopped run (training_status()["resumable"]) to continue with its own settings. Refused,
    with a message naming the running job, while another run is active."""
    session = getattr(request, "session_hash", None)
    return JOB.start_from_form(task, dataset, epochs, batch_size, lr, data_dir, zip_file,
                               who=f"session {session[:6]}" if session else "an API client", minutes=minutes, resume=resume,
                               image_size=image_size)


def minutes_to_send(train_for: str, minutes: Optional[float]) -> Optional[float]:
    """The "train for" choice decides whether the minutes go with the epochs to start_training."""
    return minutes if train_for == "minutes" else None


def run_cost(task: str, dataset: str, train_for: str, epochs: Optional[float], minutes: Optional[float],
             batch_size: Optional[float], data_dir: Optional[str], image_size: Optional[float] = None) -> str:
    """What the chosen run will cost on this machine (steps timed once per task, encoder and image
    size), for the chosen folder's images once it names one on disk."""
    return describe_run(task, dataset, epochs, minutes if train_for == "minutes" else None, batch_size, data_dir,
                        image_size if dataset in PHOTO_FORM_DATASETS else None)


def stop_training() -> str:
    """Stop the running training within about a second; nothing is saved and the pickers are unchanged."""
    return JOB.stop()


def training_status() -> dict:
    """The training job's live state: status, task, dataset, progress fraction, ETA in seconds,
    per-epoch history with the held-out probe, log, final metrics, checkpoint path and name, error,
    and `frames`: one per learning frame so far (epoch, step, knn_accuracy, points [x, y, class])."""
    return JOB.snapshot().to_dict()


def progress_html(s: JobSnapshot) -> str:
    pct = 100.0 * s.fraction
    if s.status == "idle":
        label = "No training has run since the server started."
    elif s.status == "loading":
        label = f"loading {dataset_title(s.dataset)}… {pct:.0f}%"
    else:
        eta = f" · about {format_seconds(s.eta)} left" if s.running and s.eta is not None else ""
        label = f"{s.status} · {pct:.0f}% · epoch {s.epoch}/{s.epochs} · step {s.step}/{s.total_steps}{eta}"
    return (f'<div class="ssl-progress" data-status="{s.status}"><div class="ssl-bar" style="width:{pct:.1f}%"></div>'
            f'<span>{html.escape(label)}</span></div>')


def results_md(s: JobSnapshot) -> str:
    if s.status == "failed":
        return f"**Training failed:** {html.escape(s.error)}"
    if s.status == "stopped" and s.resumable:
        return (f"**Stopped** before the end: no model was saved, but its finished epochs are kept as `{s.resumable}`; "
                f"`start_training(..., resume=\"{s.resumable}\")` continues it.")
    if s.status == "stopped":
        return "**Stopped** before the end: nothing was saved."
    if s.status != "finished" or not s.metrics:
        return ""
    m = s.metrics
    rows = ["| held-out metric | trained | random-init encoder |", "| --- | --- | --- |"]
    for metric in METRICS:
        if metric.key in m:
            base = m.get(f"{metric.key}_random_init")
            rows.append(f"| {metric.label} | **{format_metric(metric.key, m[metric.key])}** | "
                        f"{'n/a' if base is None else format_metric(metric.key, base)} |")
    where = (f"Measured on the **{dataset_title(s.dataset)} test split** ({m.get('test_images', '?')} held-out images; trained on "
             f"{m.get('train_images', '?')}). Saved as `{s.model}`: pick it in the Rotation, Similarity and Embeddings "
             "tabs (or press the button on the left). Other visitors keep the shipped models unless they pick it.")
    return "**Finished.** " + where + "\n\n" + "\n".join(rows)


def frame_update(s: JobSnapshot, seen_frames: str) -> tuple:
    """The newest learning frame, sent only when one arrived since this tab drew (figures are large)."""
    key = f"{s.started}:{len(s.frames)}"
    if key == seen_frames or not s.frames:
        return (gr.skip(),) * 6
    n = len(s.frames)
    return (key, *frame_outputs(s.frames, n, s.title), gr.update(maximum=max(2, n), value=n))


def show_frame(number: float) -> tuple:
    """Replay: frame `number` (from 1) of the current (or last) run."""
    s = JOB.snapshot()
    return frame_outputs(s.frames, int(number), s.title)


def play_step(number: float) -> tuple:
    """A play-timer tick: the next frame; the timer stops at the last one."""
    n = len(JOB.snapshot().frames)
    nxt = int(number) + 1
    return (min(nxt, max(1, n)), *show_frame(nxt), gr.Timer(active=nxt < n))


def poll(seen: int, seen_frames: str) -> tuple:
    """Timer tick of every open tab: redraw only when the job's state changed since this tab last saw
    it; a finished run is added to this tab's pickers (their chosen models stay as they are)."""
    s = JOB.snapshot()
    if s.version == seen:
        return (gr.skip(),) * 17
    where = s.title or "no run yet"
    baseline = {k[: -len("_random_init")]: v for k, v in s.metrics.items() if k.endswith("_random_init") and k.startswith("knn")}
    done = s.status == "finished" and bool(s.model)
    pickers = [gr.update(choices=REGISTRY.choices(t)) if done else gr.skip() for t in ("rotation", None, None)]
    return (s.version, f"**{s.status}**" + (f" — {s.describe()}" if s.task else ""), progress_html(s),
            plots.loss_curve(s.loss_steps, s.losses, s.history, f"Training loss · {where}"),
            plots.metric_curve(s.history, f"Held-out probe after each epoch · {dataset_title(s.dataset) + ' ' if s.dataset else ''}test split", baseline),
            "\n".join(s.log), results_md(s), gr.update(visible=done, value=f"Use {s.model} in the other tabs"),
            *frame_update(s, seen_frames), *pickers)


def use_finished_run() -> tuple:
    """This tab's pickers switch to the run that just finished; nobody else's do."""
    s = JOB.snapshot()
    if not s.model:
        return gr.skip(), gr.skip(), gr.skip()
    rotation = gr.update(choices=REGISTRY.choices("rotation"), value=s.model) if s.task == "rotation" else gr.skip()
    return rotation, gr.update(choices=REGISTRY.choices(), value=s.model), gr.update(choices=REGISTRY.choices(), value=s.model)


def refresh_pickers() -> tuple:
    """A page (re)load lists the runs finished since the server started."""
    return gr.update(choices=REGISTRY.choices("rotation")), gr.update(choices=REGISTRY.choices()), gr.update(choices=REGISTRY.choices())


def form_defaults(task: str, dataset: str) -> tuple[int, int, float]:
    r = recipe_for(dataset, task)
    return r["epochs"], r["batch_size"], r["lr"]


def length_default(dataset: str) -> str:
    """Digits train in seconds per epoch: count epochs. Photos take minutes each: give a budget."""
    return "epochs" if dataset == "digits" else "minutes"


def dataset_inputs(dataset: str) -> tuple[Any, Any, Any]:
    """The folder box, the zip upload and the image size: each shown only where it applies."""
    photos = dataset in PHOTO_FORM_DATASETS  # hidden, it goes back to 32 px: digits and CIFAR-10 have no more pixels
    return (gr.update(visible=dataset in ("folder", "cifar10")), gr.update(visible=dataset == "zip"),
            gr.update(visible=True) if photos else gr.update(visible=False, value=IMAGE_SIZE_CHOICES[0][1]))


with gr.Blocks() as tab:
    with gr.Row():
        with gr.Column(scale=1):
            task = gr.Radio([(TASK_TITLES[t], t) for t in TASKS], value="siamese", label="Task")
            dataset = gr.Radio(DATASET_CHOICES, value="digits", label="Dataset")
            data_dir = gr.Textbox(label="Folder (CIFAR-10: where to keep it; folder: one sub-folder per class)",
                                  visible=False, placeholder="/path/to/images")
            zip_file = gr.File(label=".zip of images (sub-folders = classes)", file_types=[".zip"], type="filepath", visible=False)
            image_size = gr.Radio(IMAGE_SIZE_CHOICES, value=FORM_IMAGE_SIZES[0], visible=False,
                                  label="Image size (every photo is resized to a square of this side)")
            defaults = form_defaults("siamese", "digits")
            with gr.Row():
                train_for = gr.Radio([("minutes", "minutes"), ("epochs", "epochs")], value="epochs", label="Train for")
                minutes = gr.Number(value=5, label="Minutes (wall clock, evaluation included)", minimum=0.1, maximum=720)
                epochs = gr.Number(value=defaults[0], label="Epochs", precision=0, minimum=1, maximum=500)
                batch_size = gr.Number(value=defaults[1], label="Batch size", precision=0, minimum=2, maximum=4096)
                lr = gr.Number(value=defaults[2], label="Learning rate", minimum=1e-6, maximum=1.0)
            cost = gr.Markdown()  # what the chosen run costs here: next to the button that starts it
            with gr.Row():
                start_btn = gr.Button("Start training", variant="primary")
                stop_btn = gr.Button("Stop", variant="stop")
            # start_training's optional parameters past the form's: set by the choice above, or by API clients.
            minutes_sent = gr.Number(value=None, visible=False, label="minutes")
            resume = gr.Textbox(value="", visible=False, label="resume")
            start_msg = gr.Markdown(label="Message")
            use_btn = gr.Button("Use the finished run in the other tabs", visible=False)
            gr.Markdown("A finished run joins every tab's model picker. It answers only for those who pick it: "
                        "the defaults stay the shipped models for everyone.\n\n"
                        "Runs here use the small encoders (SimpleCNN for digits, the 4-stage ConvNet for photos), "
                        "which train in minutes on a CPU. **ResNet-18** (`--arch resnet18`) would take about 70 minutes "
                        "per CIFAR-10 SimCLR epoch on two CPU cores: train it with the command line on a GPU (README, *Training at "
                        "scale*); a checkpoint folder put in `runs/` joins the pickers like any other.")
        with gr.Column(scale=2):
            job_status = gr.Markdown()
            progress = gr.HTML()
            with gr.Row():
                loss_plot = gr.Plot(label="Training loss")
                metric_plot = gr.Plot(label="Held-out probe")
            results = gr.Markdown()
            log = gr.Textbox(label="Log", lines=8, max_lines=8, autoscroll=True, elem_id="log", interactive=False)
    gr.Markdown("### Watch it learn\nA fixed held-out sample (up to 100 test images per class) as the model sees it: "
                "before the first step, after every epoch (and a few times within each epoch for short runs). Colours "
                "are the true classes, which only the Siamese task trains with; hover a point for its class and test "
                "image number; the picture below draws the images themselves at their places.")
    frame_text, frame_map, frame_panel, frame_picture = frame_view_components("The sample's images at their places (this frame)")
    frame_slider, play_btn, play_timer = frame_player("Frame (drag to replay the run)")
    seen_version = gr.State(-1)
    seen_frames = gr.State("")
    timer = gr.Timer(1.0)

    for trigger in (task.change, dataset.change):
        trigger(form_defaults, [task, dataset], [epochs, batch_size, lr], api_visibility="private")
    dataset.change(dataset_inputs, dataset, [data_dir, zip_file, image_size], api_visibility="private")
    dataset.change(length_default, dataset, train_for, api_visibility="private")
    cost_inputs = [task, dataset, train_for, epochs, minutes, batch_size, data_dir, image_size]
    for trigger in (task.change, dataset.change, train_for.change, epochs.change, minutes.change, batch_size.change,
                    data_dir.change, image_size.change):
        trigger(run_cost, cost_inputs, cost, api_visibility="private")
    for trigger in (train_for.change, minutes.change):
        trigger(minutes_to_send, [train_for, minutes], minutes_sent, api_visibility="private")
    start_btn.click(start_training, [task, dataset, epochs, batch_size, lr, data_dir, zip_file, minutes_sent, resume,
                                     image_size], start_msg, api_name="start_training")
    stop_btn.click(stop_training, None, start_msg, api_name="stop_training")
    gr.api(training_status, api_name="training_status", queue=False)
    frame_views = [frame_text, frame_map, frame_panel, frame_picture]
    job_outputs = [seen_version, job_status, progress, loss_plot, metric_plot, log, results, use_btn,
                   seen_frames, *frame_views, frame_slider]
    frame_slider.release(show_frame, frame_slider, frame_views, api_visibility="private", show_progress="hidden")
    play_btn.click(lambda: (1, *show_frame(1), gr.Timer(active=True)), None, [frame_slider, *frame_views, play_timer],
                   api_visibility="private")
    play_timer.tick(play_step, frame_slider, [frame_slider, *frame_views, play_timer], api_visibility="private",
                    show_progress="hidden")
