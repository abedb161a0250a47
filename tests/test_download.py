"""CIFAR-10 download: progress, a failure halfway (clear message, nothing corrupt), resume, md5.

A loopback HTTP server plays the CIFAR-10 host, serving an archive of the tiny fake in the real
layout; it supports Range requests and can cut the first response off halfway.
"""

import hashlib
import http.server
import io
import tarfile
import threading

import pytest
import torch

from conftest import write_fake_cifar
from ssl_core import cifar_files
from ssl_core.data import DataError, load_cifar10


def _archive(tmp_path) -> bytes:
    src = write_fake_cifar(tmp_path / "src", per_batch=10)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch):
    payload = _archive(tmp_path)
    state = {"cut_first": True, "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            state["requests"].append(rng)
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            body = payload[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state["cut_first"]:
                state["cut_first"] = False
                self.wfile.write(body[: len(body) // 2])  # then the connection drops
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    from torchvision.datasets import CIFAR10

    # The md5 check stays on; it is pointed at the fake archive's sum, as only a test may do.
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(cifar_files, "URL", f"http://127.0.0.1:{httpd.server_port}/cifar-10-python.tar.gz")
    yield state
    httpd.shutdown()


def test_download_fails_halfway_then_resumes(tmp_path, server):
    root = tmp_path / "data"
    with pytest.raises(DataError, match="could not be downloaded.*resumes"):
        load_cifar10(root, verify=False)
    assert not (root / "cifar-10-batches-py").exists()  # no half-extracted folder
    assert not (root / "cifar-10-python.tar.gz").exists()  # no "finished" partial archive
    part = root / "cifar-10-python.tar.gz.part"
    assert part.is_file() and part.stat().st_size > 0
    half = part.stat().st_size
    seen = []
    ds = load_cifar10(root, verify=False, progress=lambda msg, frac: seen.append((msg, frac)))
    assert server["requests"][-1] == f"bytes={half}-"  # resumed, not restarted
    assert len(ds) == 60 and ds.images.dtype == torch.uint8
    downloads = [f for m, f in seen if m.startswith("downloading CIFAR-10")]
    assert downloads and downloads[-1] == 1.0 and downloads[0] > 0.4  # progress continued from the half
    assert not part.exists()


def test_corrupt_download_is_deleted(tmp_path, server, monkeypatch):
    server["cut_first"] = False
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum"):
        load_cifar10(root, verify=False)
    assert not (root / "cifar-10-python.tar.gz").exists() and not (root / "cifar-10-batches-py").exists()
