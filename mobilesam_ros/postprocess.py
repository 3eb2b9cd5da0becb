"""Fast mask post-processing: low-res logits -> boolean masks at the image size.

Same result as ``transforms.logits_to_masks`` (the reference's two bilinear steps:
256 -> 1024, crop to the resized input, -> original size, threshold), computed with
less work:

* **threshold at low resolution first.** Both bilinear steps are convex
  combinations of low-res logits, so an output pixel can exceed the threshold only
  if one of the (at most 3 x 3) low-res logits it is interpolated from does. A mask
  with no low-res logit above the threshold is empty without any upsampling, and
  a mask's pixels outside the box spanned by its above-threshold low-res logits
  (plus the interpolation support) are False.
* **upsample only inside that box**, where that is cheaper than the full resize:
  the two steps compose into one linear map per axis (``A_y``: H x 256,
  ``A_x``: W x 256, built once per image size), so the box is
  ``A_y[rows] @ logits[support] @ A_x[cols]^T``, two small matrix products. Masks
  whose box is most of the image take the reference path (OpenCV resizes into
  scratch buffers that are allocated once).

Exact up to float rounding (~1e-6 on the logits): a pixel can only differ where
its logit is within rounding of the threshold. Tests hold it to mask IoU >= 0.999
against ``logits_to_masks``.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

import numpy as np

from .runtime.base import IMAGE_SIZE, LOW_RES_SIZE
from .transforms import upscale_logits

# cost model (in multiply-adds) deciding box-crop vs full resize per mask. Measured on
# a 2-core x86 machine: numpy/BLAS small products ~50 GMAC/s; the OpenCV path ~1 ms
# for 256 -> 1024 -> 2048x1365 and the threshold
_FULL_COST_PER_PIXEL = 12.0
_BOX_OVERHEAD = 1.5e6
# output buffers kept for reuse (per postprocessor): fresh pages cost a page fault
# each on first touch, which dominated post-processing time on our VMs
_POOL_SLOTS = 2
_POOL_MAX_BYTES = 1 << 30


class _Slot:
    __slots__ = ("buffer",)

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer

    def free(self) -> bool:
        # the slot's own reference plus getrefcount's argument: nobody else holds the
        # buffer or a view of it (views keep their base alive)
        return sys.getrefcount(self.buffer) <= 2


def _taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (half-pixel, align_corners=False) taps: for each output index the two
    input indices and their weights, as torch's ``interpolate`` and OpenCV's
    INTER_LINEAR compute them (negative source positions clamp to 0)."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    frac = src - i0
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = np.where(i0 == in_size - 1, 0.0, frac)
    return i0, i1, 1.0 - frac, frac


def composite_matrix(out_size: int, cropped: int, low_res: int = LOW_RES_SIZE, full: int = IMAGE_SIZE) -> np.ndarray:
    """(out_size, low_res) matrix of the reference's per-axis map: low_res -> full
    (bilinear), keep the first ``cropped`` entries, -> out_size (bilinear; identity
    when out_size == cropped, as the reference skips that step)."""
    up = np.zeros((full, low_res))
    a0, a1, w0, w1 = _taps(full, low_res)
    np.add.at(up, (np.arange(full), a0), w0)
    np.add.at(up, (np.arange(full), a1), w1)
    up = up[:cropped]
    if out_size == cropped:
        return up
    down = np.zeros((out_size, cropped))
    b0, b1, v0, v1 = _taps(out_size, cropped)
    np.add.at(down, (np.arange(out_size), b0), v0)
    np.add.at(down, (np.arange(out_size), b1), v1)
    return down @ up


class MaskPostprocessor:
    """Turns low-res logits into masks for one (original size, input size) pair.

    Create once per image size (``get_postprocessor`` caches them, per thread);
    buffers are reused between calls, so one object must not be shared by threads.
    """

    def __init__(self, original_size: tuple[int, int], input_size: tuple[int, int], threshold: float = 0.0) -> None:
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.threshold = float(threshold)
        height, width = self.original_size
        ay = composite_matrix(height, self.input_size[0])
        ax = composite_matrix(width, self.input_size[1])
        self._ay = ay.astype(np.float32)
        self._ax = ax.astype(np.float32)
        # support of each output row / column: the low-res indices with non-zero weight
        self._y_lo, self._y_hi = self._support(ay)
        self._x_lo, self._x_hi = self._support(ax)
        # output range that each low-res index influences
        self._y_first, self._y_last = self._influence(self._y_lo, self._y_hi)
        self._x_first, self._x_last = self._influence(self._x_lo, self._x_hi)
        self._full_cost = _FULL_COST_PER_PIXEL * (IMAGE_SIZE * IMAGE_SIZE + height * width)
        self._scratch_full = np.empty((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        self._scratch_out = np.empty(self.original_size, np.float32)
        self.stats = {"empty": 0, "box": 0, "full": 0}
        self._pool: list[_Slot] = []

    @staticmethod
    def _support(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonzero = matrix > 0
        lo = nonzero.argmax(axis=1)
        hi = matrix.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
        return lo, hi

    @staticmethod
    def _influence(lo: np.ndarray, hi: np.ndarray, low_res: int = LOW_RES_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """For each low-res index k: first and last output index whose support holds k
        (first > last when none does, e.g. indices beyond the crop)."""
        k = np.arange(low_res)
        # lo and hi are non-decreasing in the output index
        first = np.searchsorted(hi, k, side="left")  # first output with hi >= k
        last = np.searchsorted(lo, k, side="right") - 1  # last output with lo <= k
        return first, last

    # --- one mask ------------------------------------------------------------------------
    def _full(self, logits: np.ndarray, out: np.ndarray) -> None:
        """The reference path (``transforms.upscale_logits`` into scratch buffers), then threshold."""
        full = upscale_logits(logits, self.original_size, self.input_size, out=self._scratch_out,
                              scratch=self._scratch_full)
        np.greater(full, self.threshold, out=out)

    def mask_into(self, logits: np.ndarray, out: np.ndarray) -> str:
        """Write one (256, 256) logit map's mask into ``out`` (H, W), which must be all
        False on entry. Returns the path taken: 'empty', 'box' or 'full'."""
        above = logits > self.threshold
        rows = np.flatnonzero(above.any(axis=1))
        if rows.size == 0:
            self.stats["empty"] += 1
            return "empty"
        cols = np.flatnonzero(above.any(axis=0))
        r0, r1 = self._y_first[rows[0]], self._y_last[rows[-1]]
        c0, c1 = self._x_first[cols[0]], self._x_last[cols[-1]]
        if r0 > r1 or c0 > c1:  # only low-res pixels outside the image (in the padding)
            self.stats["empty"] += 1
            return "empty"
        r1 += 1
        c1 += 1
        k0, k1 = self._y_lo[r0], self._y_hi[r1 - 1] + 1
        m0, m1 = self._x_lo[c0], self._x_hi[c1 - 1] + 1
        h, w, nk, nm = r1 - r0, c1 - c0, k1 - k0, m1 - m0
        rows_first = h * nk * nm + h * nm * w
        cols_first = nk * nm * w + h * nk * w
        if min(rows_first, cols_first) + _BOX_OVERHEAD >= self._full_cost:
            self.stats["full"] += 1
            self._full(logits, out)
            return "full"
        ay = self._ay[r0:r1, k0:k1]
        ax = self._ax[c0:c1, m0:m1]
        block = logits[k0:k1, m0:m1]
        if rows_first <= cols_first:
            region = (ay @ block) @ ax.T
        else:
            region = ay @ (block @ ax.T)
        np.greater(region, self.threshold, out=out[r0:r1, c0:c1])
        self.stats["box"] += 1
        return "box"

    # --- many masks ---------------------------------------------------------------------
    def _output(self, count: int) -> np.ndarray:
        """An all-False (count, H, W) array. Reuses a pooled buffer that no caller
        holds any more (cleared with one memset) instead of fresh pages."""
        shape = (count, *self.original_size)
        nbytes = count * self.original_size[0] * self.original_size[1]
        if nbytes == 0 or nbytes > _POOL_MAX_BYTES:
            return np.zeros(shape, bool)
        for slot in self._pool:
            if slot.free() and slot.buffer.shape[0] >= count:
                out = slot.buffer[:count]
                out.fill(False)
                return out
        free = [slot for slot in self._pool if slot.free()]
        buffer = np.zeros(shape, bool)
        if free:  # too small: grow it
            free[0].buffer = buffer
        elif len(self._pool) < _POOL_SLOTS:
            self._pool.append(_Slot(buffer))
        return buffer[:count]

    def masks(self, low_res: np.ndarray) -> np.ndarray:
        """(..., 256, 256) logits -> (..., H, W) bool masks at the original size.

        The result is the caller's to keep and modify; its memory is recycled only
        once nothing refers to it any more.
        """
        low_res = np.asarray(low_res)
        if low_res.shape[-2:] != (LOW_RES_SIZE, LOW_RES_SIZE):
            raise ValueError(f"expected (..., {LOW_RES_SIZE}, {LOW_RES_SIZE}) logits, got {low_res.shape}")
        lead = low_res.shape[:-2]
        flat = low_res.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE)
        if flat.dtype != np.float32:
            flat = flat.astype(np.float32)
        masks = self._output(flat.shape[0])
        for i in range(flat.shape[0]):
            self.mask_into(flat[i], masks[i])
        return masks.reshape(*lead, *self.original_size)


_CACHE_SIZE = 8
_LOCAL = threading.local()


def get_postprocessor(original_size, input_size, threshold: float = 0.0) -> MaskPostprocessor:
    """A ``MaskPostprocessor`` for this image size and threshold, cached per thread
    (its scratch buffers are not shared between threads)."""
    key = (tuple(int(v) for v in original_size), tuple(int(v) for v in input_size), float(threshold))
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = OrderedDict()
    post = cache.get(key)
    if post is None:
        post = cache[key] = MaskPostprocessor(key[0], key[1], key[2])
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return post


def logits_to_masks_fast(low_res: np.ndarray, original_size, input_size, threshold: float = 0.0) -> np.ndarray:
    """Drop-in for ``transforms.logits_to_masks`` using the fast path."""
    return get_postprocessor(original_size, input_size, threshold).masks(low_res)
