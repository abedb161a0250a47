"""Data sources: digits, CIFAR-10 in its real on-disk layout (a tiny fake), user folders, splits."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_core.data import DataError, ImageSet, load_cifar10, load_dataset, load_folder, split
from ssl_core.images import to_model_image


def test_digits_shape_labels_and_upload_equivalence(digits):
    assert digits.images.shape == (1797, 3, 32, 32) and digits.images.dtype == torch.uint8
    assert digits.labels.shape == (1797,) and set(digits.labels.tolist()) == set(range(10))
    assert digits.class_names == [str(i) for i in range(10)]
    # Dark ink on white paper, like a sketch in the browser: white corners, darker middle.
    x = digits.images.float()
    assert x[:, :, 0, 0].mean() > 250 and x[:, :, 14:18, 14:18].mean() < 150
    # Same pipeline as an upload: the 8x8 source image through to_model_image gives the same tensor.
    from sklearn.datasets import load_digits

    raw = load_digits().images[0]
    paper = (255 - np.round(raw * (255.0 / 16.0))).astype(np.uint8)
    assert torch.equal(to_model_image(Image.fromarray(paper)), digits.images[0])


def test_split_is_fixed_stratified_and_disjoint(digits):
    a, b = split(digits, 0.2, 0), split(digits, 0.2, 0)
    assert torch.equal(a.test.images, b.test.images)
    assert len(a.test) + len(a.train) == len(digits)
    assert abs(len(a.test) - 0.2 * len(digits)) <= 10
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 30  # every class held out in proportion
    other = split(digits, 0.2, 1)
    assert not torch.equal(other.test.images, a.test.images)


def test_split_indices_disjoint(digits):
    s = split(digits, 0.25, 3)
    assert len(s.train) + len(s.test) == len(digits)


def test_fake_cifar_loads_in_real_layout(fake_cifar):
    data = load_cifar10(fake_cifar, download=False, verify=False)
    assert data.images.shape == (120, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.class_names[0] == "airplane" and data.name == "cifar10"
    # Row layout: 1024 R, 1024 G, 1024 B per image, row-major within each plane.
    import pickle

    with open(fake_cifar / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][0]
    assert torch.equal(data.images[0, 0].flatten(), torch.from_numpy(row[:1024]))
    assert torch.equal(data.images[0, 2, 31], torch.from_numpy(row[3072 - 32:]))
    # The official split: the last batch file (test_batch) is the test split, whatever the seed.
    assert data.test_mask.tolist() == [False] * 100 + [True] * 20
    parts = split(data, 0.5, seed=7)
    assert len(parts.train) == 100 and len(parts.test) == 20
    assert torch.equal(parts.test.images, data.images[100:])
    assert data.source == "CIFAR-10 (official python batches)"


def test_decoded_sets_are_cached_as_safetensors(fake_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    data = load_cifar10(fake_cifar, download=False, verify=False)
    (cached,) = (tmp_path / "cache" / "tensors").glob("*.safetensors")
    assert cached.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    monkeypatch.setattr("ssl_core.cifar_files.read_batch", lambda path: pytest.fail("decoded again instead of cached"))
    again = load_cifar10(fake_cifar, download=False, verify=False)
    assert torch.equal(again.images, data.images) and torch.equal(again.labels, data.labels)
    assert torch.equal(again.test_mask, data.test_mask) and again.class_names == data.class_names
    assert again.source == data.source
    # A damaged cache is not trusted: it is deleted and the data decoded again.
    cached.write_bytes(b"garbage")
    monkeypatch.undo()
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    assert torch.equal(load_cifar10(fake_cifar, download=False, verify=False).images, data.images)


def test_folder_with_its_own_split_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    for part, n in (("train", 4), ("val", 2)):
        for i in range(n):
            _save(tmp_path / "set" / part / "cats" / f"{i}.png", (200, 10, 10))
            _save(tmp_path / "set" / part / "dogs" / f"{i}.png", (10, 10, 200))
    data = load_folder(tmp_path / "set")
    assert data.class_names == ["cats", "dogs"] and len(data) == 12
    parts = split(data, 0.5, 0)
    assert len(parts.train) == 8 and len(parts.test) == 4
    assert parts.test.labels.tolist() == [0, 0, 1, 1]
    assert "own train/test split" in data.source
    # A test class the training split lacks cannot be scored: refused with the names.
    _save(tmp_path / "set" / "val" / "birds" / "0.png", (0, 200, 0))
    with pytest.raises(DataError, match="classes that train/ lacks: birds"):
        load_folder(tmp_path / "set")


def test_fake_cifar_refused_by_checksum_in_normal_use(fake_cifar):
    with pytest.raises(DataError, match="checksum"):
        load_cifar10(fake_cifar, download=False)  # verify defaults to True


def test_cifar_missing_offline_names_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path.resolve())):
        load_cifar10(tmp_path, download=False)


def _save(path, color, size=(20, 20), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_with_class_subfolders(tmp_path):
    for i in range(3):
        _save(tmp_path / "cats" / f"c{i}.png", (200, 10, 10))
        _save(tmp_path / "dogs" / f"d{i}.jpg", (10, 10, 200))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    (tmp_path / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    data = load_folder(tmp_path)
    assert data.class_names == ["cats", "dogs"] and data.labeled
    assert len(data) == 6 and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.images[0, 0].float().mean() > 150  # red stays red


def test_flat_folder_is_unlabeled(tmp_path):
    for i in range(5):
        _save(tmp_path / f"x{i}.png", (i * 40, 0, 0), mode="RGB")
    data = load_folder(tmp_path)
    assert not data.labeled and data.labels is None and data.class_names == []


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(DataError, match="No readable images"):
        load_folder(tmp_path)


def test_load_dataset_errors():
    with pytest.raises(DataError, match="needs a folder"):
        load_dataset("folder")
    with pytest.raises(DataError, match="Unknown dataset"):
        load_dataset("mnist")


def test_imageset_validates():
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 3, 32, 32), None, [], "x")  # float, not uint8


def test_the_folder_cap_is_the_apps_and_the_command_line_lifts_it(tmp_path):
    from ssl_core.data import MAX_FOLDER_IMAGES
    from ssl_core.runs import config_from_form
    from ssl_core.train import TrainConfig, prepare_data

    for i in range(6):
        _save(tmp_path / "set" / f"x{i}.png", (i * 40, 0, 0), mode="RGB")
    with pytest.raises(DataError, match="holds 6 images; at most 5 can be used here"):
        load_folder(tmp_path / "set", max_images=5)
    messages = []
    data = load_folder(tmp_path / "set", lambda m, f: messages.append(m), max_images=None)
    assert len(data) == 6 and messages[0] == "decoding 6 images in set (0.0 GB in memory): 0 done"
    # The app's forms keep the cap; a config may lift it, as the CLI does.
    assert config_from_form("rotation", "digits").max_folder_images == MAX_FOLDER_IMAGES == 100_000
    with pytest.raises(DataError, match="at most 5"):
        prepare_data(TrainConfig(task="rotation", dataset="folder", data_dir=str(tmp_path / "set"), max_folder_images=5))
    assert len(prepare_data(TrainConfig(task="rotation", dataset="folder", data_dir=str(tmp_path / "set"),
                                        max_folder_images=None))[1].train) == 5


def test_photos_load_at_the_runs_image_size(photo_slice, tmp_path, monkeypatch):
    """The Tiny ImageNet copy's 64-px JPEGs: at 64 every file takes the batched decoder and keeps its
    pixels exactly; at 32 the same files are reduced as an upload would be. Each size has its cache."""
    from ssl_core.images import to_model_image

    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    big = load_folder(photo_slice, size=64)
    small = load_folder(photo_slice, size=32)
    assert big.images.shape[1:] == (3, 64, 64) and big.image_size == 64 and small.image_size == 32
    assert len(big) == len(small) == 800 and int(big.test_mask.sum()) == 200
    first = sorted((photo_slice / "train" / big.class_names[0]).iterdir())[0]
    assert torch.equal(big.images[0], to_model_image(first, size=64))
    assert torch.equal(small.images[0], to_model_image(first, size=32))
    assert len(list((tmp_path / "cache" / "tensors").glob("*.safetensors"))) == 2
    assert torch.equal(load_folder(photo_slice, size=64).images, big.images)  # from its cache


def test_imageset_takes_any_square_size_and_only_squares():
    assert ImageSet(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), None, [], "x").image_size == 64
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 64, 48, dtype=torch.uint8), None, [], "x")


# ------------------------------------------------------------------ train and test share nothing
def assert_disjoint(parts, whole=None) -> None:  # noqa: ANN001 - a Split, and the ImageSet it came from
    """No image of the test split is also in the training split, by content (the same file twice,
    or a leaked copy, are the same bytes), and together they are exactly `whole`, when given."""
    train = {img.numpy().tobytes() for img in parts.train.images}
    test = [img.numpy().tobytes() for img in parts.test.images]
    shared = [i for i, key in enumerate(test) if key in train]
    assert not shared, f"{len(shared)} test images are in the training split too (test rows {shared[:10]})"
    if whole is not None:
        assert len(parts.train) + len(parts.test) == len(whole)
        assert train | set(test) == {img.numpy().tobytes() for img in whole.images}


@pytest.mark.parametrize("fraction, seed", [(0.2, 0), (0.25, 3), (0.5, 1)])
def test_digits_splits_share_no_image(digits, fraction, seed):
    assert len({img.numpy().tobytes() for img in digits.images}) == len(digits)  # all 1,797 differ
    assert_disjoint(split(digits, fraction, seed), digits)


def test_the_official_cifar_layout_splits_without_sharing(fake_cifar):
    data = load_cifar10(fake_cifar, download=False, verify=False)
    parts = split(data)
    assert_disjoint(parts, data)
    assert torch.equal(parts.test.images, data.images[data.test_mask])  # test_batch, whole and alone


def test_folders_split_without_sharing(tmp_path, monkeypatch):
    """A folder's own train/ and test/ stay apart; a folder without them is split by seed, apart too."""
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("test", 3)):
        for cls in ("cats", "dogs"):
            for i in range(n):
                _save(tmp_path / "own" / part / cls / f"{i}.png", tuple(int(v) for v in rng.integers(0, 256, 3)))
                _save(tmp_path / "plain" / cls / f"{part}{i}.png", tuple(int(v) for v in rng.integers(0, 256, 3)))
    own = load_folder(tmp_path / "own")
    parts = split(own)
    assert_disjoint(parts, own)
    test_files = sorted((tmp_path / "own" / "test").rglob("*.png"))
    assert {to_model_image(f).numpy().tobytes() for f in test_files} == {i.numpy().tobytes() for i in parts.test.images}
    plain = load_folder(tmp_path / "plain")
    for seed in range(3):
        assert_disjoint(split(plain, 0.3, seed), plain)


def test_the_fake_cifar_is_read_alike_by_torchvision_and_by_ours(fake_cifar, monkeypatch):
    """The fake is written by our own writer and read by our own reader, so a layout both got wrong
    would pass the tests above. torchvision's reader, the reference for the official files, must
    read the same pixels, labels, classes and split from it (its md5 check is off for the fake)."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: Path(path).is_file())
    ours = split(load_cifar10(fake_cifar, download=False, verify=False))
    for train, part in ((True, ours.train), (False, ours.test)):
        ref = CIFAR10(str(fake_cifar), train=train, download=False)
        assert torch.equal(torch.from_numpy(ref.data).permute(0, 3, 1, 2), part.images), train  # HWC there, CHW here
        assert ref.targets == part.labels.tolist() and ref.classes == part.class_names
