"""Writing result .npz files quickly and atomically (segment, everything).

Uncompressed by default: 100 boolean masks of a 2048x1365 photo are 280 MB, written
at page-cache speed, while zlib at numpy's level (``np.savez_compressed``) took 4.8-5.5 s
for the same arrays on our 2-core machines. ``compress`` uses zlib's fastest level
(500-800 MB/s of masks here, files 20-180x smaller). The arrays and dtypes are the same
either way (``np.load`` reads both: members ``NAME.npy`` in a zip, as ``np.savez``
writes them), and every member is written straight from the array's memory.

An array can also be a ``StreamedArray``, made chunk by chunk while it is written:
a helper thread fills one of two buffers while this thread writes (or compresses)
the other, so making and writing overlap and the whole array is never in memory
(``segment`` streams full-size masks this way).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Union

import numpy as np

from ..cli import CommandError

COMPRESS_HELP = ("compress the .npz (zlib's fastest level: masks 20-180x smaller, ~0.5 s per 300 MB of masks; "
                 "default: stored uncompressed, written at page-cache speed)")
#: zlib level for --compress: 1 is ~4x faster than numpy's 6 on masks, files ~2x larger
COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class StreamedArray:
    """An array of ``shape`` and ``dtype`` made while it is written: ``fill(start, out)``
    writes rows ``start .. start + len(out)`` (along axis 0) into ``out`` (whatever
    ``out`` held before), ``chunk`` rows at a time."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fill: Callable[[int, np.ndarray], None]
    chunk: int = 8


NpzValue = Union[np.ndarray, StreamedArray]


def write_npz(path: str | os.PathLike, arrays: Mapping[str, NpzValue], compress: bool = False) -> Path:
    """Write ``arrays`` to exactly ``path`` (no '.npz' appended), via a temporary file
    renamed into place, so a failed or interrupted write leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f, zipfile.ZipFile(f, "w", compression=compression, allowZip64=True,
                                                   compresslevel=COMPRESS_LEVEL if compress else None) as archive:
            for name, value in arrays.items():
                _write_member(archive, name, value)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove(tmp)
        raise
    return path


def _write_member(archive: zipfile.ZipFile, name: str, value: NpzValue) -> None:
    """One ``NAME.npy`` member: the .npy header, then the data straight from memory
    (``np.savez`` copies it in 16 MB pieces first)."""
    if isinstance(value, StreamedArray):
        shape, dtype = tuple(int(n) for n in value.shape), np.dtype(value.dtype)
    else:
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"{name}: object arrays are not written (they would need pickle)")
        shape, dtype = array.shape, array.dtype
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    written = 0

    def write(chunk: np.ndarray) -> None:
        nonlocal written
        data = np.ascontiguousarray(chunk, dtype).reshape(-1).view(np.uint8)
        member.write(data)
        written += data.nbytes

    # force_zip64 as np.savez does: the member's size is not known to zipfile in advance
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(member, header)
        if isinstance(value, StreamedArray):
            _stream(value, shape, dtype, write)
        else:
            write(array)
    if written != expected:
        raise ValueError(f"{name}: {written} bytes of data for shape {shape} {dtype} ({expected} bytes)")


def _stream(value: StreamedArray, shape: tuple[int, ...], dtype: np.dtype, write: Callable[[np.ndarray], None]) -> None:
    """Fill chunks in a helper thread, write them here: two buffers, handed back and
    forth, so one is filled while the other is written."""
    rows = shape[0] if shape else 0
    if rows == 0:
        return
    step = max(1, min(int(value.chunk), rows))
    free: queue.Queue = queue.Queue()
    filled: queue.Queue = queue.Queue()
    for _ in range(min(2, -(-rows // step))):
        free.put(np.empty((step, *shape[1:]), dtype))

    def produce() -> None:
        try:
            for start in range(0, rows, step):
                buffer = free.get()
                if buffer is None:  # the writer stopped (an error): stop too
                    return
                part = buffer[: min(step, rows - start)]
                value.fill(start, part)
                filled.put((buffer, part))
            filled.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread and raised there
            filled.put(exc)

    helper = threading.Thread(target=produce, name="npz-fill", daemon=True)
    helper.start()
    try:
        while True:
            item = filled.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            buffer, part = item
            write(part)
            free.put(buffer)
    finally:
        free.put(None)
        helper.join()


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
