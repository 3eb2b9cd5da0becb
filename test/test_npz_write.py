"""Result .npz files: uncompressed by default (fast), --compress optional, same arrays
and dtypes either way, written atomically, a clear one-line error when they cannot be."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.cli import CommandError
from mobilesam_ros.commands._npz import StreamedArray, write_npz


def _arrays():
    rng = np.random.default_rng(0)
    return {"masks": rng.random((3, 40, 50)) > 0.5, "iou_predictions": rng.random((3, 1)).astype(np.float32),
            "low_res_logits": rng.normal(size=(3, 1, 256, 256)).astype(np.float32)}


@pytest.mark.parametrize("compress", [False, True])
def test_same_arrays_and_dtypes(tmp_path, compress):
    arrays = _arrays()
    path = write_npz(tmp_path / "sub" / "out.npz", arrays, compress=compress)
    with np.load(path) as data:
        assert set(data.files) == set(arrays)
        for name, array in arrays.items():
            assert data[name].dtype == array.dtype and np.array_equal(data[name], array)
    assert [p.name for p in path.parent.iterdir()] == ["out.npz"]  # no temporary left


def test_default_is_stored_and_compress_is_smaller(tmp_path):
    masks = np.zeros((4, 300, 400), bool)
    masks[:, 50:250, 100:300] = True
    plain = write_npz(tmp_path / "plain.npz", {"masks": masks})
    small = write_npz(tmp_path / "small.npz", {"masks": masks}, compress=True)
    assert plain.stat().st_size >= masks.nbytes > 20 * small.stat().st_size


def test_exact_path_and_clear_error(tmp_path):
    assert write_npz(tmp_path / "no_suffix", {"a": np.ones(2)}).name == "no_suffix"  # nothing appended
    (tmp_path / "file").write_text("x")
    with pytest.raises(CommandError, match="cannot write"):
        write_npz(tmp_path / "file" / "out.npz", {"a": np.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "no_suffix"]


def test_segment_and_everything_offer_compress():
    import argparse

    from mobilesam_ros.commands import everything, segment

    for module in (segment, everything):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert "--compress" in parser.format_help()


@pytest.mark.parametrize("compress", [False, True])
def test_streamed_array_is_made_while_written(tmp_path, compress):
    """A StreamedArray is filled chunk by chunk in a helper thread, into two buffers
    that alternate, and np.load sees one ordinary array."""
    import threading

    masks = np.random.default_rng(1).random((7, 30, 20)) > 0.5
    seen = []

    def fill(start, out):
        seen.append((start, len(out), out.ctypes.data, threading.current_thread() is threading.main_thread()))
        out[...] = masks[start : start + len(out)]

    path = write_npz(tmp_path / "s.npz", {"masks": StreamedArray(masks.shape, np.dtype(bool), fill, chunk=3),
                                          "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32)},
                     compress=compress)
    with np.load(path) as data:
        assert data["masks"].dtype == bool and np.array_equal(data["masks"], masks)
        assert data["scalar"].shape == () and data["scalar"] == np.float32(2.5)
        assert data["empty"].shape == (0, 4)
    assert [(s, n) for s, n, _, _ in seen] == [(0, 3), (3, 3), (6, 1)]
    assert len({address for _, _, address, _ in seen}) == 2  # two buffers, reused
    assert not any(main for *_, main in seen)  # made in the helper thread


def test_streamed_array_errors_leave_nothing(tmp_path, monkeypatch):
    def broken(start, out):
        if start:
            raise RuntimeError("fill failed")
        out[...] = 0

    with pytest.raises(RuntimeError, match="fill failed"):
        write_npz(tmp_path / "bad.npz", {"a": StreamedArray((4, 10), np.dtype(np.float32), broken, chunk=2)})
    assert list(tmp_path.iterdir()) == []
    # the writer fails half-way (a full disk): one clear error, and the helper thread stops
    import threading
    import zipfile

    calls = []
    real_write = zipfile._ZipWriteFile.write

    def failing_write(self, data):
        calls.append(len(data))
        if len(calls) > 2:  # header, first chunk, then the disk is full
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(zipfile._ZipWriteFile, "write", failing_write)
    fine = StreamedArray((9, 10), np.dtype(np.float32), lambda start, out: out.fill(start), chunk=2)
    with pytest.raises(CommandError, match="No space left on device"):
        write_npz(tmp_path / "full.npz", {"a": fine})
    assert list(tmp_path.iterdir()) == []
    assert not any(t.name == "npz-fill" for t in threading.enumerate())
