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
def test_streamed_array_is_written_chunk_by_chunk(tmp_path, compress):
    """A StreamedArray's chunks may all be views of one reused buffer: the file holds
    each chunk as it was when written, and np.load sees one ordinary array."""
    masks = np.random.default_rng(1).random((7, 30, 20)) > 0.5
    buffer = np.empty((3, 30, 20), bool)

    def chunks():
        for start in range(0, 7, 3):
            part = buffer[: min(3, 7 - start)]
            part[...] = masks[start : start + 3]
            yield part

    path = write_npz(tmp_path / "s.npz", {"masks": StreamedArray(masks.shape, np.dtype(bool), chunks()),
                                          "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32)},
                     compress=compress)
    with np.load(path) as data:
        assert data["masks"].dtype == bool and np.array_equal(data["masks"], masks)
        assert data["scalar"].shape == () and data["scalar"] == np.float32(2.5)
        assert data["empty"].shape == (0, 4)


def test_streamed_array_of_the_wrong_size_fails_and_leaves_nothing(tmp_path):
    short = StreamedArray((4, 10), np.dtype(np.float32), iter([np.zeros((3, 10), np.float32)]))
    with pytest.raises(ValueError, match="bytes of data"):
        write_npz(tmp_path / "bad.npz", {"a": short})
    assert list(tmp_path.iterdir()) == []
