"""The seed's SimpleCNN shape, shared encoder, task heads and embeddings."""

import torch

from ssl_core.models import build_model


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
