"""The seed's SimpleCNN shape, shared encoder, task heads and embeddings."""

import torch

from ssl_core.models import ModelArgs, build_model


def test_seed_architecture_and_heads():
    rot = build_model("rotation")
    convs = [m for m in rot.encoder.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 32), (32, 64)]
    assert rot.encoder.fc[1].in_features == 64 * 8 * 8 and rot.encoder.fc[1].out_features == 128
    x = torch.randn(5, 3, 32, 32)
    assert rot(x).shape == (5, 4) and rot.embed(x).shape == (5, 128)
    siam = build_model("siamese")
    assert siam(x).shape == (5, 128) and torch.allclose(siam.embed(x), siam(x))
    sim = build_model("simclr")
    assert torch.allclose(sim.embed(x).norm(dim=1), torch.ones(5), atol=1e-5)


def test_parameter_count_matches_seed():
    # Seed SiameseNetwork: conv(3->32) + conv(32->64) + fc(4096->128) + fc(128->128)
    seed = (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (4096 * 128 + 128) + (128 * 128 + 128)
    assert sum(p.numel() for p in build_model("siamese").parameters()) == seed


def test_convnet_encoder_shapes_and_batchnorm():
    x = torch.randn(6, 3, 32, 32)
    for task, out in (("rotation", 4), ("siamese", 128), ("simclr", 128)):
        model = build_model(task, arch="convnet")
        assert model.args.arch == "convnet" and model.args.width == 24
        assert model(x).shape == (6, out) and model.embed(x).shape == (6, 128)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())
    # The embedding is a function of the encoder features alone (the probes rely on it).
    model = build_model("siamese", arch="convnet").eval()
    assert torch.allclose(model.embed(x), model.embed_features(model.encoder(x)))


def test_unknown_architecture_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown encoder"):
        build_model("rotation", arch="vit")


def test_resnet18_has_the_cifar_stem_and_every_head(tmp_path):
    from ssl_core.checkpoints import load_checkpoint, make_card, save_checkpoint

    x = torch.randn(2, 3, 32, 32)
    for task, out in (("rotation", 4), ("siamese", 128), ("simclr", 128)):
        model = build_model(task, arch="resnet18").eval()
        assert model.args.arch == "resnet18" and model.args.feature_dim == 512
        assert model(x).shape == (2, out)
        # SimCLR's representation is the 512 pooled channels; Siamese distances live in its head.
        assert model.embed(x).shape == (2, 512 if task != "siamese" else 128)
    net = model.encoder.conv
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and isinstance(net.maxpool, torch.nn.Identity)
    assert 11_000_000 < sum(p.numel() for p in model.encoder.parameters()) < 11_300_000  # ResNet-18's 11.2M
    # A checkpoint rebuilds it from its card alone.
    save_checkpoint(tmp_path / "r18", model, make_card(model, {}, "digits", [], {}))
    loaded = load_checkpoint(tmp_path / "r18")
    assert loaded.card["arch"] == "resnet18" and torch.equal(loaded.model(x), model(x))


def test_image_size_is_a_model_argument():
    # The seed's Linear layer sees every position of its last map, so it grows with the picture.
    big = build_model("rotation", image_size=64)
    assert big.encoder.fc[1].in_features == 64 * 16 * 16 and big(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    # The convnet's average pool takes any size; a strided stem halves the picture first.
    plain = build_model("rotation", arch="convnet", image_size=64)
    strided = build_model("rotation", arch="convnet", image_size=64, stem_stride=2)
    x = torch.randn(2, 3, 64, 64)
    assert plain(x).shape == strided(x).shape == (2, 4)
    assert strided.encoder.conv[0].stride == (2, 2) and plain.encoder.conv[0].stride == (1, 1)
    # Same weights, same names: a strided stem changes no parameter shape (cards rebuild either).
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in strided.state_dict().items()}


def test_depth_deepens_the_convnets_last_two_stages_only() -> None:
    """depth 2: a second conv-BN-ReLU at the two smallest map sizes; the features, the head and
    every earlier layer keep their shapes, and it is refused for encoders without stages."""
    import pytest

    from ssl_core.config import TrainConfig

    x = torch.randn(2, 3, 64, 64)
    one = build_model("rotation", arch="convnet", width=8, image_size=64, stem_stride=2)
    two = build_model("rotation", arch="convnet", width=8, image_size=64, stem_stride=2, depth=2)
    convs = [[m for m in net.encoder.conv if isinstance(m, torch.nn.Conv2d)] for net in (one, two)]
    assert [c.out_channels for c in convs[0]] == [8, 16, 32, 64]
    assert [c.out_channels for c in convs[1]] == [8, 16, 32, 32, 64, 64]
    assert one(x).shape == two(x).shape == (2, 4) and one.encoder(x).shape == two.encoder(x).shape
    assert ModelArgs(task="rotation").depth == 1  # cards written before it: one conv a stage
    with pytest.raises(ValueError, match="depth 2 is a convnet option"):
        TrainConfig(task="rotation", dataset="digits", depth=2)
    with pytest.raises(ValueError, match="depth must be one of 1, 2"):
        TrainConfig(task="rotation", dataset="cifar10", depth=3)


def test_cards_without_image_size_rebuild_as_32_px(shipped_checkpoints):
    import json

    from ssl_core.checkpoints import load_checkpoint
    from ssl_core.models import ModelArgs

    card = json.loads((shipped_checkpoints / "cifar10-rotation" / "card.json").read_text())
    old_args = {k: v for k, v in card["model_args"].items() if k not in ("image_size", "stem_stride", "depth")}
    assert ModelArgs(**old_args).image_size == 32 and ModelArgs(**old_args).stem_stride == 1 and ModelArgs(**old_args).depth == 1
    ckpt = load_checkpoint(shipped_checkpoints / "cifar10-rotation")
    assert ckpt.model.args.image_size == 32 and ckpt.model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_strided_stem_is_a_convnet_option():
    import pytest

    from ssl_core.config import TrainConfig

    with pytest.raises(ValueError, match="convnet option"):
        TrainConfig(task="rotation", dataset="digits", stem_stride=2)
    with pytest.raises(ValueError, match="multiple of 4"):
        TrainConfig(task="rotation", dataset="digits", image_size=30)
    with pytest.raises(ValueError, match="image_size must be between"):
        TrainConfig(task="rotation", dataset="cifar10", image_size=1024)
