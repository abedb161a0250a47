"""Zip uploads and typed folder paths: hostile input is refused whole, with a message, leaving nothing behind."""

from __future__ import annotations

import io
import shutil
import stat
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from ssl_core import archive
from ssl_core.archive import ArchiveError, extract_zip, resolve_data_folder, safe_extract_zip
from ssl_core.data import DataError, load_folder


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_class_folders_with_junk_are_extracted_and_junk_counted(tmp_path: Path) -> None:
    members = {f"pets/cat/{i}.png": png_bytes((250, 10 * i, 0)) for i in range(3)}
    members |= {f"pets/dog/{i}.jpg": png_bytes((0, 10 * i, 250)) for i in range(3)}  # wrong suffix still decodes
    members |= {"pets/readme.txt": b"hello", "__MACOSX/pets/._cat": b"x", "pets/.DS_Store": b"x", "pets/cat/._0.png": b"x"}
    out = extract_zip(make_zip(tmp_path / "up.zip", members), tmp_path / "uploads")
    assert out.images == 6 and out.skipped == 4
    assert out.summary == "6 images (4 other files skipped)"
    assert out.folder.name == "pets"  # stepped into the single top folder, so cat/ and dog/ are classes
    data = load_folder(out.folder)
    assert data.class_names == ["cat", "dog"] and len(data) == 6
    assert safe_extract_zip(tmp_path / "up.zip", tmp_path / "uploads").is_dir()


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "..\\evil.png", "/tmp/evil.png", "C:/evil.png"])
def test_paths_escaping_the_folder_refuse_the_whole_zip(tmp_path: Path, name: str) -> None:
    z = make_zip(tmp_path / "slip.zip", {"ok/1.png": png_bytes(), name: png_bytes()})
    dest = tmp_path / "uploads" / "inner"
    with pytest.raises(ArchiveError, match="absolute path|outside its folder"):
        safe_extract_zip(z, dest)
    assert leftovers(dest) == []
    assert not (tmp_path / "uploads" / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert not Path("/tmp/evil.png").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("imgs/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr("imgs/a.png", png_bytes())
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract_zip(tmp_path / "link.zip", tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_zip_bomb_by_ratio_is_refused_before_writing(tmp_path: Path) -> None:
    # 20 MB of zeros deflates to ~20 KB: a thousand-fold expansion no photo has.
    z = make_zip(tmp_path / "bomb.zip", {"a.png": png_bytes(), "b.png": bytes(20 * 2**20)})
    assert z.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="zip bomb"):
        safe_extract_zip(z, tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_too_many_entries_and_too_large_total_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = make_zip(tmp_path / "many.zip", {f"{i}.png": png_bytes() for i in range(12)})
    monkeypatch.setattr(archive, "MAX_MEMBERS", 10)
    with pytest.raises(ArchiveError, match="12 entries; at most 10"):
        safe_extract_zip(z, tmp_path / "uploads")
    monkeypatch.setattr(archive, "MAX_MEMBERS", 100)
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 100)
    with pytest.raises(ArchiveError, match="would expand to"):
        safe_extract_zip(z, tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_zip_without_images_is_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "docs.zip", {"notes.txt": b"x", "data.csv": b"1,2", "model.pkl": b"\x80\x04."})
    with pytest.raises(ArchiveError, match=r"no images \(3 files"):
        safe_extract_zip(z, tmp_path / "uploads")


@pytest.mark.parametrize(
    "payload, message",
    [(b"", "not a zip"), (b"just some text, not a zip", "not a zip"), (png_bytes(), "not a zip")],
)
def test_not_a_zip_is_refused(tmp_path: Path, payload: bytes, message: str) -> None:
    (tmp_path / "f.zip").write_bytes(payload)
    with pytest.raises(ArchiveError, match=message):
        safe_extract_zip(tmp_path / "f.zip", tmp_path / "uploads")


def test_truncated_and_corrupted_zips_are_refused_without_leftovers(tmp_path: Path) -> None:
    members = {f"{i}.png": png_bytes((i * 20, 0, 0), size=64) for i in range(8)}
    good = make_zip(tmp_path / "good.zip", members).read_bytes()
    (tmp_path / "trunc.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(ArchiveError):
        safe_extract_zip(tmp_path / "trunc.zip", tmp_path / "uploads")
    # Flip bytes inside the first member's compressed data: the CRC check must catch it mid-extract.
    bad = bytearray(good)
    first = zipfile.ZipFile(io.BytesIO(good)).infolist()[0]
    start = first.header_offset + 30 + len(first.filename) + 10
    bad[start : start + 20] = bytes(255 - b for b in bad[start : start + 20])
    (tmp_path / "crc.zip").write_bytes(bytes(bad))
    with pytest.raises(ArchiveError, match="damaged|could not be extracted"):
        safe_extract_zip(tmp_path / "crc.zip", tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []  # the half-written temp folder is gone


def test_encrypted_and_duplicate_members_are_refused(tmp_path: Path) -> None:
    # zipfile cannot write encrypted members; set the "encrypted" flag bit in the local and the
    # central header by hand, which is all a reader sees before it asks for a password.
    raw = bytearray(make_zip(tmp_path / "plain.zip", {"secret.png": png_bytes()}).read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        raw[raw.index(signature) + flag_offset] |= 0x1
    (tmp_path / "enc.zip").write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="password-protected"):
        safe_extract_zip(tmp_path / "enc.zip", tmp_path / "uploads")
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(tmp_path / "dup.zip", "w") as zf:
            zf.writestr("a.png", png_bytes())
            zf.writestr("a.png", png_bytes((0, 0, 0)))
    with pytest.raises(ArchiveError, match="same file twice"):
        safe_extract_zip(tmp_path / "dup.zip", tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_archive_errors_are_data_errors() -> None:
    # The app and the CLI already show DataError messages as they are; archive refusals join them.
    assert issubclass(ArchiveError, DataError)


# ------------------------------------------------------------------------------- typed folder paths
@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv(archive.DATA_ROOT_ENV, raising=False)
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SHARE"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "data"
    (root / "mine" / "cats").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    return root


def test_paths_inside_the_root_resolve(data_root: Path) -> None:
    assert resolve_data_folder("mine", data_root) == (data_root / "mine").resolve()
    assert resolve_data_folder(str(data_root / "mine" / "cats"), data_root) == (data_root / "mine" / "cats").resolve()
    assert resolve_data_folder("  mine/  ", data_root).name == "mine"


@pytest.mark.parametrize("typed", ["..", "../secret", "/etc", "/nonexistent-folder-xyz", "escape", "mine/../../secret"])
def test_paths_outside_the_root_are_refused_alike(data_root: Path, typed: str) -> None:
    # Same message whether or not the outside folder exists: no probing of the server's disk.
    with pytest.raises(ArchiveError, match=r"Only folders inside the data folder \(data/\)"):
        resolve_data_folder(typed, data_root)


def test_root_from_environment(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(archive.DATA_ROOT_ENV, str(data_root))
    assert resolve_data_folder("mine").name == "mine"
    with pytest.raises(ArchiveError, match="Only folders inside"):
        resolve_data_folder("/etc")


def test_missing_empty_and_nul_paths_get_messages(data_root: Path) -> None:
    with pytest.raises(ArchiveError, match="Folder not found: nothere"):
        resolve_data_folder("nothere", data_root)
    with pytest.raises(ArchiveError, match="Type the path"):
        resolve_data_folder("  ", data_root)
    with pytest.raises(ArchiveError, match="not valid"):
        resolve_data_folder("mine\x00/etc", data_root)


def test_spaces_refuse_typed_paths(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/ssl-playground")
    with pytest.raises(ArchiveError, match="upload a .zip"):
        resolve_data_folder("mine", data_root)


def test_local_run_without_root_reads_any_folder(data_root: Path) -> None:
    # On the user's own machine (no Space, no root configured) their folders are theirs to use.
    assert resolve_data_folder(str(data_root.parent / "secret")).name == "secret"


@pytest.mark.parametrize("env", [{"GRADIO_SERVER_NAME": "0.0.0.0"}, {"GRADIO_SERVER_NAME": "192.168.1.5"}, {"GRADIO_SHARE": "True"}])
def test_network_facing_server_without_root_refuses_typed_paths(data_root: Path, monkeypatch: pytest.MonkeyPatch, env: dict) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ArchiveError, match="open to the network.*SSL_DATA_ROOT"):
        resolve_data_folder(str(data_root / "mine"))
    # With a root configured, the same server reads folders inside it.
    assert resolve_data_folder("mine", data_root).name == "mine"


# ------------------------------------------------------- pixel bombs: sized from headers, refused unread
def test_a_crafted_huge_jpeg_refuses_the_zip_before_anything_is_written(tmp_path: Path) -> None:
    from tests.test_images import huge_jpeg

    members = {f"set/cats/{i}.png": png_bytes() for i in range(3)} | {"set/cats/huge.jpg": huge_jpeg(10_000, 7_000)}
    t = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"'set/cats/huge.jpg' is 10000x7000 \(70 megapixels\), over the 64-megapixel limit"):
        safe_extract_zip(make_zip(tmp_path / "up.zip", members), tmp_path / "uploads")
    assert time.perf_counter() - t < 2
    assert leftovers(tmp_path / "uploads") == []


@pytest.mark.parametrize("size, message", [
    ((10_000, 7_000), r"'a/bomb.png' is 10000x7000 \(70 megapixels\)"),  # over ours, under PIL's own limit
    ((20_000, 20_000), r"'a/bomb.png' is too large to decode safely"),  # PIL refuses to even open it
])
def test_png_bombs_refuse_the_zip(tmp_path: Path, size: tuple[int, int], message: str) -> None:
    from tests.test_images import bilevel_png

    z = make_zip(tmp_path / "up.zip", {"a/ok.png": png_bytes(), "a/bomb.png": bilevel_png(*size)})
    with pytest.raises(ArchiveError, match=message):
        safe_extract_zip(z, tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_a_header_behind_a_large_metadata_block_is_still_found(tmp_path: Path) -> None:
    """Padding the file before its frame header (a 100 KB comment) does not hide the claimed size:
    a header not found in the first bytes is looked for in the whole member."""
    from tests.test_images import huge_jpeg

    crafted = huge_jpeg(10_000, 7_000)
    padded = crafted[:2] + b"".join(b"\xff\xfe" + (65533).to_bytes(2, "big") + bytes(65531) for _ in range(2)) + crafted[2:]
    assert len(padded) > archive.HEADER_BYTES
    with pytest.raises(ArchiveError, match="70 megapixels"):
        safe_extract_zip(make_zip(tmp_path / "up.zip", {"huge.jpg": padded}), tmp_path / "uploads")


def test_too_many_pixels_together_refuse_the_zip(tmp_path: Path) -> None:
    """Forty 60-megapixel PNGs of 60 KB each: every one under the per-image limit, 2.4 gigapixels
    together, minutes of decoding for the one shared job. Refused from their headers."""
    from tests.test_images import bilevel_png

    one = bilevel_png(8_000, 7_500)
    z = make_zip(tmp_path / "up.zip", {f"scans/{i:02d}.png": one for i in range(40)})
    assert z.stat().st_size < 5_000_000
    t = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"2\.4 gigapixels together \(the largest, 'scans/00.png', is 8000x7500\); at most 2"):
        safe_extract_zip(z, tmp_path / "uploads")
    assert time.perf_counter() - t < 5
    assert leftovers(tmp_path / "uploads") == []


def test_a_member_larger_than_its_header_claims_is_refused(tmp_path: Path) -> None:
    """Both size fields of a stored member say 100 bytes, the data is 5,000: the reader never gives
    more than the header's count (so nothing larger than declared is written) and the CRC check
    fails, refusing the zip whole."""
    payload = png_bytes(size=64) + bytes(5000)
    z = make_zip_stored(tmp_path / "lie.zip", {"ok.png": png_bytes(), "liar.png": payload})
    raw = bytearray(z.read_bytes())
    for signature, size_offsets in ((b"PK\x03\x04", (18, 22)), (b"PK\x01\x02", (20, 24))):
        at = raw.index(signature, raw.index(b"liar.png") - 60 if signature == b"PK\x03\x04" else raw.rindex(b"PK\x01\x02"))
        for off in size_offsets:
            raw[at + off: at + off + 4] = (100).to_bytes(4, "little")
    z.write_bytes(bytes(raw))
    info = {i.filename: i for i in zipfile.ZipFile(z).infolist()}["liar.png"]
    assert info.file_size == info.compress_size == 100
    with pytest.raises(ArchiveError, match="could not be extracted|damaged"):
        safe_extract_zip(z, tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_a_full_disk_refuses_the_zip_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = make_zip(tmp_path / "up.zip", {f"{i}.png": png_bytes() for i in range(3)})
    real = shutil.disk_usage
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda p: real(p)._replace(free=archive.FREE_SPACE_MARGIN))
    with pytest.raises(ArchiveError, match="short of disk space"):
        safe_extract_zip(z, tmp_path / "uploads")
    assert leftovers(tmp_path / "uploads") == []


def test_a_folder_of_crafted_pictures_loads_its_real_images_without_decoding_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A typed folder (or the command line's) gets no zip check: each crafted file is refused from
    its header as it comes, the real images load, and no decoder is handed a crafted size."""
    from tests.test_images import bilevel_png, huge_jpeg

    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "cache"))
    for cls, color in (("cats", (200, 10, 10)), ("dogs", (10, 10, 200))):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "set" / cls / f"{i}.png").write_bytes(png_bytes(color))
        (tmp_path / "set" / cls / "huge.jpg").write_bytes(huge_jpeg(10_000, 7_000))
        (tmp_path / "set" / cls / "bomb.png").write_bytes(bilevel_png(20_000, 20_000))
        (tmp_path / "set" / cls / "over.png").write_bytes(bilevel_png(10_000, 7_000))
    from PIL import ImageFile

    from ssl_core import images

    loaded: list[tuple[int, int]] = []  # the size of every picture a decoder was asked for
    real_load, real_batch = ImageFile.ImageFile.load, images._decode_jpegs

    def spy(self):  # noqa: ANN001, ANN202
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    monkeypatch.setattr(images, "_decode_jpegs", lambda files: (loaded.extend(map(images.jpeg_size, files)), real_batch(files))[1])
    t = time.perf_counter()
    data = load_folder(tmp_path / "set")
    assert time.perf_counter() - t < 5
    assert len(data) == 4 and data.labels.tolist() == [0, 0, 1, 1]
    assert loaded and max(w * h for w, h in loaded) <= 16 * 16, loaded  # the four real ones, 16x16


def make_zip_stored(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path
