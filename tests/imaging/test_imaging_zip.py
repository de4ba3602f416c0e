"""Zip input: read like a folder; dangerous or broken archives refused with InputError."""

from __future__ import annotations

import errno
import io
import stat
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sarcoscope.errors import InputError, OutputError
from sarcoscope.imaging import archive, list_series, read_ct


def _zip_folder(folder: Path, target: Path, prefix: str = "study/") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, prefix + f.relative_to(folder).as_posix())
        zf.writestr("__MACOSX/._junk", b"apple metadata")
    return target


def test_zip_of_series(tmp_path: Path, series_dir: Path, volume_hu: np.ndarray) -> None:
    archive_path = _zip_folder(series_dir, tmp_path / "ct.zip")
    vol = read_ct(archive_path)
    np.testing.assert_array_equal(vol.hu, volume_hu)
    assert vol.source_path == str(archive_path)
    assert [i.n_slices for i in list_series(archive_path)] == [volume_hu.shape[0]]


def test_headers_outlive_the_extracted_files(tmp_path: Path, series_dir: Path) -> None:
    """Large header values are deferred while reading; from a zip they must be loaded before cleanup."""
    first = sorted(series_dir.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.private_block(0x0029, "SARCOSCOPE TEST", create=True).add_new(0x10, "OB", b"\x01" * 100_000)
    ds.save_as(first)
    vol = read_ct(_zip_folder(series_dir, tmp_path / "ct.zip"))
    blob = vol.dicom_headers[0].private_block(0x0029, "SARCOSCOPE TEST")[0x10].value
    assert len(blob) == 100_000


def test_path_traversal_entry_refused(tmp_path: Path, series_dir: Path) -> None:
    bad = _zip_folder(series_dir, tmp_path / "bad.zip")
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("../../evil.dcm", b"x")
    with pytest.raises(InputError, match=r"unsafe path '\.\./\.\./evil\.dcm'"):
        read_ct(bad)
    assert not (tmp_path.parent / "evil.dcm").exists()
    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/etc/evil", b"x")
    with pytest.raises(InputError, match="unsafe path"):
        read_ct(absolute)


def test_symlink_entry_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("series/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(InputError, match="symbolic link"):
        read_ct(tmp_path / "link.zip")


def _bomb(path: Path, entries: int = 1, mib: int = 4) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(entries):
            zf.writestr(f"zeros{k}.dcm", b"\x00" * (mib << 20))  # compresses about 1000:1
    return path


def test_zip_bomb_refused_by_ratio_of_the_whole_archive(tmp_path: Path, monkeypatch) -> None:
    """Small entries (formerly never ratio-checked) add up: the archive's total ratio is what counts."""
    bomb = _bomb(tmp_path / "bomb.zip", entries=3, mib=1)
    monkeypatch.setattr(archive, "RATIO_ALLOWANCE_BYTES", 1 << 20)
    with pytest.raises(InputError, match="zip bomb"):
        read_ct(bomb)
    dest = tmp_path / "dest"
    dest.mkdir()
    monkeypatch.setattr(archive, "RATIO_ALLOWANCE_BYTES", (2 << 20) + 1000)  # stops in the 3rd entry
    with pytest.raises(InputError, match="zip bomb"):
        archive.extract_zip(bomb, dest)
    assert list(dest.iterdir()) == []  # nothing left behind


def test_zip_size_cap_is_configurable(tmp_path: Path, monkeypatch) -> None:
    bomb = _bomb(tmp_path / "bomb.zip")
    monkeypatch.setenv(archive.MAX_BYTES_ENV, "1")
    with pytest.raises(InputError, match="beyond 1 MiB \\(the size limit\\)"):
        read_ct(bomb)
    monkeypatch.setenv(archive.MAX_BYTES_ENV, "lots")
    with pytest.raises(InputError, match="positive number of MiB"):
        read_ct(bomb)
    monkeypatch.setenv(archive.MAX_BYTES_ENV, "8")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert archive.extract_zip(bomb, dest) == 1 and (dest / "zeros0.dcm").stat().st_size == 4 << 20


def test_zip_with_lying_sizes_stops_while_extracting(tmp_path: Path, monkeypatch) -> None:
    """Sizes declared smaller than the data: refused while extracting, and nothing is left behind."""
    bomb = _bomb(tmp_path / "bomb.zip", entries=2)
    monkeypatch.setattr(archive, "_extract_members", _with_small_declared_sizes(archive._extract_members))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InputError, match=r"cannot extract zeros0\.dcm"):
        archive.extract_zip(bomb, dest, max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


def _with_small_declared_sizes(extract):
    def lying(zf, *args):
        for member in zf.infolist():
            member.file_size = 1000
        return extract(zf, *args)

    return lying


@pytest.mark.parametrize(
    ("content", "pattern"),
    [(b"", "not a readable zip"), (b"PK\x03\x04 broken", "not a readable zip"), (None, "is empty")],
)
def test_empty_or_corrupt_zip(tmp_path: Path, content: bytes | None, pattern: str) -> None:
    path = tmp_path / "in.zip"
    if content is None:
        zipfile.ZipFile(path, "w").close()
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=pattern):
        read_ct(path)


def _filling_disk(monkeypatch, after_files: int) -> list[Path]:
    """Writes of the extracted files fail with ENOSPC from file number `after_files` + 1 on."""
    opened: list[Path] = []

    class FillsUp(io.FileIO):
        def write(self, data) -> int:
            if len(opened) > after_files:
                raise OSError(errno.ENOSPC, "No space left on device", self.name)
            return super().write(data)

    def open_filling(path, mode="r"):
        opened.append(Path(path))
        return FillsUp(path, mode)

    monkeypatch.setattr(archive, "open", open_filling, raising=False)
    return opened


def test_a_full_disk_while_extracting_is_an_output_error_not_a_bad_zip(
    tmp_path: Path, series_dir: Path, monkeypatch
) -> None:
    """ENOSPC while writing the extracted files was an InputError ("cannot extract ...: [Errno 28]"): the
    zip blamed for the disk. It is an OutputError saying the disk is full, and nothing extracted is left."""
    zipped = _zip_folder(series_dir, tmp_path / "ct.zip")
    dest = tmp_path / "dest"
    dest.mkdir()
    opened = _filling_disk(monkeypatch, after_files=2)
    with pytest.raises(OutputError, match="disk is full") as caught:
        archive.extract_zip(zipped, dest)
    assert not isinstance(caught.value, InputError) and str(dest) not in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC
    assert len(opened) == 3 and list(dest.iterdir()) == []


def test_a_damaged_zip_stays_an_input_error(tmp_path: Path) -> None:
    """A bad CRC and a truncated archive are the zip's fault: InputError, as before."""
    path = tmp_path / "crc.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("series/a.dcm", b"A" * 5000)
    data = bytearray(path.read_bytes())
    data[data.index(b"A" * 100) + 10] = ord("B")
    path.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InputError, match="Bad CRC"):
        archive.extract_zip(path, dest)
    assert list(dest.iterdir()) == []
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(InputError):
        archive.extract_zip(truncated, dest)


def test_cli_analyze_of_a_zip_on_a_full_disk_says_the_disk_is_full(
    tmp_path: Path, series_dir: Path, monkeypatch
) -> None:
    """`sarcoscope analyze ct.zip` on a full disk: one message that the disk is full (exit 1), not that the
    zip is unreadable, and no report."""
    from typer.testing import CliRunner

    from sarcoscope.cli import app

    zipped = _zip_folder(series_dir, tmp_path / "ct.zip")
    _filling_disk(monkeypatch, after_files=0)
    result = CliRunner().invoke(app, ["analyze", str(zipped), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "disk is full" in text and "cannot extract" not in text and "Traceback" not in text
    assert not (tmp_path / "out" / "report.json").exists()


def test_zip_without_ct_names_the_zip(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match=r"no CT image series in zip .*docs\.zip"):
        read_ct(tmp_path / "docs.zip")


def test_zip_holding_one_nifti(tmp_path: Path) -> None:
    data = np.full((6, 5, 4), -1000, np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "ct.nii.gz")
    with zipfile.ZipFile(tmp_path / "n.zip", "w") as zf:
        zf.write(tmp_path / "ct.nii.gz", "export/ct.nii.gz")
    vol = read_ct(tmp_path / "n.zip")
    assert (
        vol.source_kind == "nifti" and vol.shape == (4, 5, 6) and vol.source_path == str(tmp_path / "n.zip")
    )
