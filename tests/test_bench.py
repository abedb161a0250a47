"""`python -m ssl_core bench` on tiny sizes: the output format, positive rates, the md5 patch undone.

The ratio itself is not asserted: on a shared 2-core CI machine it is too noisy to gate on
(docs/benchmarks.md has the measured numbers and how to reproduce them).
"""

from __future__ import annotations

import re

import pytest

from ssl_core.__main__ import main

LINE = re.compile(r"^(rotation|siamese) cpu: project (\d+) (img/s|pairs/s), seed (\d+) (img/s|pairs/s), ratio (\d+\.\d\d)$", re.M)


def test_bench_prints_one_line_per_task_with_positive_rates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--steps", "2", "--repeats", "1", "--images", "200"]) == 0
    out = capsys.readouterr().out
    found = {m.group(1): m for m in LINE.finditer(out)}
    assert set(found) == {"rotation", "siamese"}, out
    assert found["rotation"].group(3) == "img/s" and found["siamese"].group(3) == "pairs/s"
    for m in found.values():
        project, seed, ratio = int(m.group(2)), int(m.group(4)), float(m.group(6))
        assert project > 0 and seed > 0
        assert ratio == pytest.approx(project / seed, rel=0.05, abs=0.02)
    # The final lines come last, in task order.
    assert out.rstrip().splitlines()[-2].startswith("rotation cpu:")
    assert out.rstrip().splitlines()[-1].startswith("siamese cpu:")


def test_bench_one_task_and_md5_check_restored(capsys: pytest.CaptureFixture[str]) -> None:
    import torchvision.datasets.cifar as cifar

    before = (cifar.check_integrity, cifar.CIFAR10._check_integrity)
    assert main(["bench", "--task", "siamese", "--steps", "1", "--repeats", "1", "--images", "100"]) == 0
    assert (cifar.check_integrity, cifar.CIFAR10._check_integrity) == before
    lines = [m.group(1) for m in LINE.finditer(capsys.readouterr().out)]
    assert lines == ["siamese"]


def test_md5_check_stays_on_outside_the_bench(tmp_path) -> None:  # noqa: ANN001
    """The synthetic folder is refused by torchvision everywhere but inside the benchmark."""
    import torchvision.datasets.cifar as cifar

    from ssl_core.bench import seed_datasets
    from ssl_core.cifar_files import write_fake as write_fake_cifar

    root = write_fake_cifar(tmp_path, per_batch=4)
    assert len(seed_datasets(root, "rotation")) == 20
    with pytest.raises(RuntimeError, match="corrupted"):
        cifar.CIFAR10(str(root), train=True)


def test_rotation_epoch_timer_runs_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--epoch", "--epoch-images", "64", "--batch-size", "32"]) == 0
    m = re.search(r"^rotation epoch cpu: 64 images x 4 rotations in (\d+\.\d\d) s", capsys.readouterr().out, re.M)
    assert m and float(m.group(1)) > 0


def test_tsne_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--tsne", "--tsne-points", "200"]) == 0
    m = re.search(r"^tsne 200x128: openTSNE (\d+\.\d) s \(5-NN (\d\.\d+)\), scikit-learn (\d+\.\d) s \(5-NN (\d\.\d+)\), ratio",
                  capsys.readouterr().out, re.M)
    assert m, "no tsne line"
    # Ten well-separated clusters: both maps must keep them apart.
    assert float(m.group(2)) > 0.9 and float(m.group(4)) > 0.9
