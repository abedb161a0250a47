"""The app end to end through gradio_client: every endpoint, the model pickers' names, the shipped
CIFAR-10 and digits models on held-out images, and a real run joining the models on offer.

The app is launched in this process (prevent_thread_lock) on a free port, with its runs folder in
a temporary directory so the tests never change which models the real app serves.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import separation, shipped_default, shipped_names
from ssl_core.images import to_pil

pytestmark = pytest.mark.slow
ANGLES = ["0°", "90°", "180°", "270°"]
SHIPPED = shipped_names()
ROOT = Path(__file__).resolve().parent.parent


def fresh_app():  # noqa: ANN201
    """app and its tab modules imported anew: a registry and job bound to the current SSL_RUNS_DIR."""
    import app
    import ui.common
    import ui.embeddings
    import ui.rotation
    import ui.similarity
    import ui.train

    for module in (ui.common, ui.rotation, ui.similarity, ui.embeddings, ui.train, app):
        importlib.reload(module)
    return app


@pytest.fixture(scope="module")
def app_module(tmp_path_factory, free_port):
    os.environ["SSL_RUNS_DIR"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["SSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))  # maps computed afresh, not read from ~/.cache
    app = fresh_app()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    yield app
    app.JOB.stop()
    app.demo.close()


@pytest.fixture(scope="module")
def client(app_module):
    from gradio_client import Client

    return Client(app_module.demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def lean(app_module):
    """A client that leaves output images on the server: for the many-call accuracy checks."""
    from gradio_client import Client

    return Client(app_module.demo.local_url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory, digits_split) -> dict:
    """Held-out digits saved as PNG uploads: `digit{label}_{n}_k{turn}.png`, and light-on-dark copies."""
    folder = tmp_path_factory.mktemp("uploads")
    test = digits_split.test
    out = {}
    for label in range(10):
        for n in range(2):
            i = int(torch.nonzero(test.labels == label).flatten()[n])
            for k in range(4):
                img = to_pil(torch.rot90(test.images[i], k, (-2, -1)), scale=4)
                for style, picture in (("dark", img), ("light", ImageOps.invert(img))):
                    path = folder / f"digit{label}_{n}_k{k}_{style}.png"
                    picture.save(path)
                    out[(label, n, k) if style == "dark" else (label, n, k, "light")] = str(path)
    return out


@pytest.fixture(scope="module")
def cifar_test():  # noqa: ANN201
    """The shipped 2,000-image sample of the CIFAR-10 test split (the models never trained on it)."""
    from ssl_core.maps import SAMPLE_FILE
    from safetensors.torch import load_file

    return load_file(str(SAMPLE_FILE))


def _card(name: str) -> dict:
    return json.loads((ROOT / "checkpoints" / name / "card.json").read_text())


def _upload(path: str):
    from gradio_client import handle_file

    return handle_file(path)


def test_every_endpoint_is_named_as_documented(client) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = {name: [p["parameter_name"] for p in spec["parameters"]] for name, spec in api.items()}
    assert params["/predict_rotation"] == ["image", "model"]
    assert params["/compare_pair"] == ["image_a", "image_b", "model"]
    assert params["/embedding_map"] == ["model"]
    assert params["/list_models"] == []
    assert params["/start_training"] == ["task", "dataset", "epochs", "batch_size", "lr", "data_dir", "zip_file", "minutes",
                                         "resume", "image_size"]
    assert params["/stop_training"] == [] and params["/training_status"] == []
    assert params["/learning_frames"] == ["model"]
    assert params["/explain_rotation"] == ["image", "model"]
    assert params["/explain_pair"] == ["image_a", "image_b", "model"]
    model_params = [p for name in ("/predict_rotation", "/compare_pair", "/embedding_map", "/explain_rotation", "/explain_pair")
                    for p in api[name]["parameters"] if p["parameter_name"] == "model"]
    assert all(p["parameter_has_default"] for p in model_params)  # model is optional everywhere


def test_list_models_names_every_shipped_model(client) -> None:
    assert client.predict(api_name="/list_models")[:len(SHIPPED)] == SHIPPED


def test_examples_offer_only_models_on_offer(app_module) -> None:
    """A photo model's example rows appear only once it ships: an example that picks a model the
    app cannot load would fail when clicked."""
    from ui.common import examples

    rows = examples(("cifar10-cat-turned-90.png", "cifar10-rotation"), ("cifar10-cat-turned-90.png", "no-such-model"),
                    ("no-such-file.png", "cifar10-rotation"))
    assert [(Path(r[0]).name, r[1]) for r in rows] == [("cifar10-cat-turned-90.png", "cifar10-rotation")]
    assert Path(rows[0][0]).is_file()


def test_the_image_size_is_offered_only_for_photo_folders(app_module) -> None:
    """Shown for a folder or zip; hidden again, it goes back to 32 px, so a later digits run is not
    refused for a size the visitor can no longer see."""
    from ui.train import dataset_inputs, run_cost

    for dataset in ("folder", "zip"):
        assert dataset_inputs(dataset)[2]["visible"] is True and "value" not in dataset_inputs(dataset)[2]
    for dataset in ("digits", "cifar10"):
        assert dataset_inputs(dataset)[2] == {"__type__": "update", "visible": False, "value": 32}
    # Between the two events a digits estimate may still see 64: it is priced at 32, not refused.
    assert run_cost("rotation", "digits", "epochs", 1, None, None, None, 64).startswith("1 epoch: about ")


def test_the_header_names_the_data_the_default_models_learned_from(app_module) -> None:
    photos = [app_module.REGISTRY.default_name(task).startswith("photos-") for task in ("rotation", "siamese")]
    said = app_module.answered_by()
    assert ("Tiny ImageNet" in said) == any(photos) and ("CIFAR-10" in said) == (not all(photos))
    if any(photos) and not all(photos):  # some photo models shipped: each tab is named with its data
        photo_tab = "*Rotation*" if photos[0] else "*Similarity*"
        assert said.index(photo_tab) < said.index("Tiny ImageNet") < said.index("CIFAR-10"), said


def test_default_and_unknown_models(client, images) -> None:
    from gradio_client.exceptions import AppError

    digit = _upload(images[(7, 0, 1)])
    assert f"Answered by `{shipped_default('rotation')}` (shipped)" in client.predict(digit, api_name="/predict_rotation")[3]
    assert f"Answered by `{shipped_default('rotation')}`" in client.predict(digit, "rotation", api_name="/predict_rotation")[3]
    with pytest.raises(AppError, match=re.escape(f"Unknown model 'digits-rotatoin'; choose one of: {', '.join(SHIPPED)} (")):
        client.predict(digit, "digits-rotatoin", api_name="/predict_rotation")
    with pytest.raises(AppError, match="cifar10-siamese is a siamese model; this needs a rotation model"):
        client.predict(digit, "cifar10-siamese", api_name="/predict_rotation")


def test_cifar10_rotation_through_the_app_agrees_with_its_card(lean, cifar_test, tmp_path) -> None:
    """100 CIFAR-10 test images (10 per class) in all four turns, as PNG uploads."""
    rows = [int(i) for c in range(10) for i in torch.nonzero(cifar_test["labels"] == c).flatten()[::20]]
    right = []
    for n, i in enumerate(rows):
        for k in range(4):
            path = tmp_path / f"cifar{n}_k{k}.png"
            to_pil(torch.rot90(cifar_test["images"][i], k, (-2, -1))).save(path)
            result = lean.predict(_upload(str(path)), "cifar10-rotation", api_name="/predict_rotation")
            right.append(result[0]["label"] == ANGLES[k])
    card = _card("cifar10-rotation")["metrics"]["rotation_accuracy"]
    print(f"\ncifar10-rotation through gradio_client: {np.mean(right):.3f} of {len(right)} turns; card {card:.3f}")
    assert abs(np.mean(right) - card) < 0.07  # 400 turns: a standard error of about 2 points


def test_cifar10_siamese_separates_classes_as_its_card_says(lean, cifar_test, tmp_path) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = cifar_test["labels"].numpy()
    distances, same = [], []
    for n in range(120):
        a = int(rng.integers(len(labels)))
        pool = np.nonzero(labels == labels[a] if n % 2 == 0 else labels != labels[a])[0]
        b = int(rng.choice(pool[pool != a]))
        paths = []
        for j, i in enumerate((a, b)):
            paths.append(str(tmp_path / f"pair{n}_{j}.png"))
            to_pil(cifar_test["images"][i]).save(paths[-1])
        result = lean.predict(_upload(paths[0]), _upload(paths[1]), "cifar10-siamese", api_name="/compare_pair")
        distances.append(result[0])
        same.append(n % 2 == 0)
    auc = roc_auc_score(same, -np.asarray(distances))
    card = _card("cifar10-siamese")["metrics"]["pair_auc"]
    print(f"\ncifar10-siamese pair ROC-AUC through gradio_client: {auc:.3f} on {len(same)} test pairs; card {card:.3f}")
    assert abs(auc - card) < 0.12  # 120 pairs: a standard error of about 0.05
    assert "held-out CIFAR-10 pairs" in result[1] and len(result[2]) == 5 and "Answered by `cifar10-siamese`" in result[1]


def test_digits_are_judged_right_in_both_polarities(lean, images) -> None:
    for style in ("dark", "light"):
        right = []
        for label in range(10):
            for k in range(4):
                key = (label, 0, k) if style == "dark" else (label, 0, k, "light")
                result = lean.predict(_upload(images[key]), "digits-rotation", api_name="/predict_rotation")
                right.append(result[0]["label"] == ANGLES[k])
                assert {c["label"] for c in result[0]["confidences"]} == set(ANGLES)
        print(f"\ndigits-rotation, {style} digits through gradio_client: {np.mean(right):.3f} of {len(right)} turns")
        assert np.mean(right) >= 0.9
    assert "digits-rotation" in result[3] and "test split" in result[3]


def test_predict_rotation_latency(client, images) -> None:
    """Median over 30 calls, Client already made. gradio_client has fixed costs of its own: it
    waits for the answer by polling a message deque in 50 ms sleeps (gradio_client/utils.py,
    stream_sse_v1plus), and each of its HTTP calls makes a fresh httpx client whose SSL context
    loads the CA bundle (~30 ms, even for http://). The lean client (no output downloads,
    ssl_verify=False, which changes nothing on http://) shows the floor; plain HTTP (upload, then
    /gradio_api/run/predict_rotation) shows what the app itself costs. docs/benchmarks.md has the figures."""
    import httpx
    from gradio_client import Client

    upload = images[(7, 0, 1)]

    def via_client() -> None:
        client.predict(_upload(upload), "digits-rotation", api_name="/predict_rotation")

    answer_only = Client(client.src, verbose=False, download_files=False)  # output images stay on the server

    def via_client_no_downloads() -> None:
        answer_only.predict(_upload(upload), "digits-rotation", api_name="/predict_rotation")

    lean = Client(client.src, verbose=False, download_files=False, ssl_verify=False)

    def via_lean_client() -> None:
        lean.predict(_upload(upload), "digits-rotation", api_name="/predict_rotation")

    http = httpx.Client(base_url=client.src)

    def via_http() -> None:
        with open(upload, "rb") as f:
            path = http.post("gradio_api/upload", files={"files": ("digit.png", f, "image/png")}).json()[0]
        r = http.post("gradio_api/run/predict_rotation",
                      json={"data": [{"path": path, "orig_name": "digit.png", "meta": {"_type": "gradio.FileData"}}, "digits-rotation"]})
        assert r.json()["data"][0]["label"] == "90°"

    medians = {}
    for name, call in (("gradio_client", via_client), ("gradio_client without image downloads", via_client_no_downloads),
                       ("gradio_client lean", via_lean_client), ("plain HTTP", via_http)):
        call()  # warm-up
        samples = []
        for _ in range(30):
            t = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t)
        medians[name] = statistics.median(samples) * 1000
    http.close()
    print("\npredict_rotation median latency over 30 calls: " + ", ".join(f"{k} {v:.0f} ms" for k, v in medians.items()))
    # The target is 50 ms; shared CI cores and the client's polling get looser bounds.
    assert medians["plain HTTP"] < 200
    assert medians["gradio_client"] < 600
    assert medians["gradio_client lean"] < 300


def test_bad_upload_gives_a_readable_message(client, tmp_path) -> None:
    from gradio_client.exceptions import AppError

    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a picture")
    with pytest.raises(AppError, match="not an image"):
        client.predict(_upload(str(bad)), api_name="/predict_rotation")


def test_explain_endpoints_give_maps_and_the_numbers_behind_them(client, app_module) -> None:
    """Where it looks, through the API: maps as images (the upload's beside the answer, one per turn;
    one per picture of a pair) with the deletion check's figures; two pictures, two different maps."""
    cat, ship = (_upload(str(app_module.EXAMPLES / f)) for f in ("cifar10-cat-turned-90.png", "cifar10-ship-upright.png"))
    looks, turns, numbers, text = client.predict(cat, api_name="/explain_rotation")  # the default rotation model
    assert numbers["model"] == app_module.REGISTRY.default_name("rotation") and numbers["shown"]
    assert "Shown because it is faithful" in text
    assert [t["turn"] for t in numbers["turns"]] == ANGLES and numbers["deletion_check"]["passed"]
    assert len(turns) == 4 and turns[0]["caption"].startswith("as given → guess")
    predicted = client.predict(cat, api_name="/predict_rotation")[2]  # the guesses gallery: the same guesses
    assert [t["predicted"] for t in numbers["turns"]] == [g["caption"].split("guess ")[1].split(" ")[0] for g in predicted]
    other = client.predict(ship, "cifar10-rotation", api_name="/explain_rotation")[0]
    assert Image.open(looks).size[0] >= 256 and Image.open(looks).tobytes() != Image.open(other).tobytes()
    a, b = (_upload(str(app_module.EXAMPLES / f)) for f in ("cifar10-cat-a.png", "cifar10-truck-a.png"))
    map_a, map_b, pair, text = client.predict(a, b, "cifar10-siamese", api_name="/explain_pair")
    distance = client.predict(a, b, "cifar10-siamese", api_name="/compare_pair")[0]
    assert pair["shown"] and pair["distance"] == pytest.approx(distance, abs=1e-3) and "Where each is like the other" in text
    assert Image.open(map_a).tobytes() != Image.open(map_b).tobytes()
    digits = client.predict(_upload(str(app_module.EXAMPLES / "digit-3-upright.png")),
                            _upload(str(app_module.EXAMPLES / "digit-8.png")), "digits-siamese", api_name="/explain_pair")
    assert digits[2]["model"] == "digits-siamese" and digits[2]["same"] is False


def test_explain_endpoints_answer_bad_input_as_the_tabs_do(client, tmp_path) -> None:
    from gradio_client.exceptions import AppError

    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a picture")
    digit = _upload(str(ROOT / "assets/examples/digit-8.png"))
    with pytest.raises(AppError, match="not an image"):
        client.predict(_upload(str(bad)), api_name="/explain_rotation")
    with pytest.raises(AppError, match="not an image"):
        client.predict(digit, _upload(str(bad)), api_name="/explain_pair")
    with pytest.raises(AppError, match="cifar10-siamese is a siamese model; this needs a rotation model"):
        client.predict(digit, "cifar10-siamese", api_name="/explain_rotation")
    with pytest.raises(AppError, match="Unknown model 'digits-siamse'"):
        client.predict(digit, digit, "digits-siamse", api_name="/explain_pair")
    assert client.predict(None, api_name="/explain_rotation")[2] == {}  # nothing given: nothing to explain


def test_digits_siamese_same_class_is_closer(client, images) -> None:
    def pair(a: tuple, b: tuple) -> tuple:
        return client.predict(_upload(images[a]), _upload(images[b]), "digits-siamese", api_name="/compare_pair")

    same = [pair((c, 0, 0), (c, 1, 0)) for c in (0, 3, 4, 7)]
    diff = [pair((a, 0, 0), (b, 0, 0)) for a, b in ((0, 1), (3, 8), (4, 7), (7, 1))]
    assert all(isinstance(r[0], float) for r in same + diff)
    assert max(r[0] for r in same) < min(r[0] for r in diff)
    assert "same class" in same[0][1] and "different classes" in diff[0][1]
    assert "threshold" in same[0][1] and "held-out digits pairs" in same[0][1]
    assert len(same[0][2]) == 5 and len(same[0][3]) == 5  # five nearest held-out images to each
    assert same[0][2][0]["caption"].startswith("0 ")


def _status(client) -> dict:
    return client.predict(api_name="/training_status")


def _wait(client, condition, timeout: float = 120.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = _status(client)
        if condition(s):
            return s
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting; last status {_status(client)['status']}")


def test_a_finished_run_is_offered_but_never_the_default(client, app_module) -> None:
    msg = client.predict("siamese", "digits", 2, api_name="/start_training")
    assert msg.startswith("Started siamese on digits")
    running = _wait(client, lambda s: s["status"] == "running" and s["step"] > 0)
    assert 0 < running["fraction"] <= 1 and running["task"] == "siamese"
    done = _wait(client, lambda s: s["status"] not in ("loading", "running", "stopping"))
    assert done["status"] == "finished", done["log"]
    assert [h["epoch"] for h in done["history"]] == [1, 2]
    m = done["metrics"]  # learned: pairs separate far better than by the same network untrained (0.97 vs 0.86)
    assert m["pair_auc"] >= m["pair_auc_random_init"] + 0.05, m
    assert Path(done["checkpoint"]).is_dir() and done["model"] == Path(done["checkpoint"]).name
    assert client.predict(api_name="/list_models") == SHIPPED + [done["model"]]
    img = str(app_module.EXAMPLES / "digit-3-upright.png")
    picked = client.predict(_upload(img), _upload(img), done["model"], api_name="/compare_pair")
    assert f"`{done['model']}` (trained in this app)" in picked[1]
    # A new visitor (a new client, a new page) still gets the shipped default.
    from gradio_client import Client

    visitor = Client(client.src, verbose=False, download_files=False)
    default = shipped_default("siamese")
    assert f"Answered by `{default}` (shipped)" in visitor.predict(_upload(img), _upload(img), api_name="/compare_pair")[1]
    assert app_module.REGISTRY.get("siamese").name == default


def test_a_run_shows_its_learning_frames_live_and_by_name_after(client) -> None:
    assert client.predict("siamese", "digits", 3, api_name="/start_training").startswith("Started")
    live = _wait(client, lambda s: len(s["frames"]) >= 1, timeout=120)
    assert live["frames"][0]["epoch"] == 0 and len(live["frames"][0]["points"]) == 359
    # Generous: the machine is shared, and a loaded one has stretched this run past a minute.
    done = _wait(client, lambda s: s["status"] not in ("loading", "running", "stopping"), timeout=300)
    assert done["status"] == "finished", done["log"]
    frames = done["frames"]
    assert len(frames) >= 4 and {0, 1, 2, 3} <= {f["epoch"] for f in frames}
    assert all("knn_accuracy" in f and "step" in f for f in frames)
    # Against the untrained frame 0: pairs separate (0.85 -> 0.98 measured) and neighbours agree more (0.91 -> 0.97).
    assert separation(frames[-1]["distances"]) >= separation(frames[0]["distances"]) + 0.05
    assert frames[-1]["knn_accuracy"] >= frames[0]["knn_accuracy"] + 0.02
    x, y, c = frames[-1]["points"][0]
    assert -1 <= x <= 1 and -1 <= y <= 1 and 0 <= c <= 9
    assert client.predict(done["model"], api_name="/learning_frames") == frames
    shipped = client.predict("digits-rotation", api_name="/learning_frames")
    assert len(shipped) >= 4 and shipped[0]["epoch"] == 0 and len(shipped[-1]["confusion"]) == 4


def test_second_start_refused_and_stop_keeps_previous_model(client, app_module) -> None:
    before = client.predict(api_name="/list_models")
    assert client.predict("rotation", "digits", 50, api_name="/start_training").startswith("Started")
    _wait(client, lambda s: s["status"] == "running" and s["step"] > 2)
    refused = client.predict("simclr", "digits", 1, api_name="/start_training")
    assert refused.startswith("Not started") and "rotation on digits" in refused and "already training" in refused
    assert "left" in refused  # it names the running job's ETA
    t = time.perf_counter()
    stopped = client.predict(api_name="/stop_training")
    s = _wait(client, lambda s: s["status"] == "stopped", timeout=5)
    assert time.perf_counter() - t < 2.0, "stop took too long"
    assert "previous model is kept" in stopped and s["checkpoint"] == "" and s["model"] == ""
    assert client.predict(api_name="/list_models") == before  # a stopped run offers nothing


def test_invalid_training_settings_are_refused_with_a_message(client) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="greater than maximum"):  # the form's own range check
        client.predict("siamese", "digits", 2, 64, 5.0, api_name="/start_training")
    assert client.predict("siamese", "folder", 2, api_name="/start_training").startswith("Not started: Type the path")
    assert client.predict("siamese", "zip", 2, api_name="/start_training").startswith("Not started: Upload a .zip")
    assert client.predict("siamese", "digits", 2, image_size=64, api_name="/start_training").startswith(
        "Not started: 64 px is for folders of photos")


def test_cifar10_embedding_map_with_images(client) -> None:
    tsne, pca, text, mosaic = client.predict("cifar10-siamese", api_name="/embedding_map")
    for fig in (tsne, pca):
        assert fig["type"] == "plotly" and '"scattergl"' in fig["plot"] and "random-init" in fig["plot"]
        assert "2,000 held-out CIFAR-10 images" in fig["plot"]
    assert "5-NN accuracy of the trained embedding" in text and "cifar10-siamese" in text
    assert "10,000" in text or "shipped with the app" in text  # says which held-out images it searched
    picture = Image.open(mosaic)
    assert picture.size[0] >= 800 and len(set(picture.convert("L").getdata())) > 200  # photos, not a blank canvas


def test_digits_embedding_map(client) -> None:
    tsne, pca, text, mosaic = client.predict("digits-simclr", api_name="/embedding_map")
    assert "held-out digits images (test split) · digits-simclr" in tsne["plot"] and "digits-simclr" in text


def test_a_resnet18_checkpoint_is_offered_and_answers(client, app_module) -> None:
    """What `train --arch resnet18` writes (here a tiny SimCLR run on 64 digits) loads in the app from
    its card alone and answers like any other model; removed afterwards so the list stays as it was."""
    from ssl_core.runs import run_and_save
    from ssl_core.train import TrainConfig

    cfg = TrainConfig(task="simclr", dataset="digits", arch="resnet18", epochs=1, batch_size=32, max_train_images=64)
    _, path = run_and_save(cfg, app_module.REGISTRY.runs_dir / "simclr-digits-resnet18")
    try:
        assert "simclr-digits-resnet18" in client.predict(api_name="/list_models")
        img = str(app_module.EXAMPLES / "digit-3-upright.png")
        distance, verdict, near_a, _ = client.predict(_upload(img), _upload(img), "simclr-digits-resnet18",
                                                      api_name="/compare_pair")
        assert distance == pytest.approx(0.0, abs=1e-4) and "`simclr-digits-resnet18`" in verdict
        assert "(ResNet-18 encoder)" in verdict  # the card's architecture, named for the user
        assert len(near_a) == 5
    finally:
        shutil.rmtree(path)
