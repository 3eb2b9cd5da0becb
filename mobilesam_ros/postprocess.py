"""Fast mask post-processing: low-res logits -> boolean masks at the image size.

The masks are those of ``reference_upscale(logits) > threshold``: the reference's two
bilinear steps (256 -> 1024, crop to the resized input, -> original size; torch's
``interpolate(mode="bilinear", align_corners=False)`` taps), each a fixed sequence of
float32 multiply-adds per pixel. ``MaskPostprocessor`` gives the same bits with work
that follows the mask *boundary*, not the image area:

* every output pixel is a convex combination of at most 3 x 3 low-res logits (its
  *support*). Output rows (columns) with the same support form a *group*; a pair of
  groups is a rectangle of pixels that all share one support;
* a rectangle whose support logits all lie above ``threshold + margin`` is True, all
  below ``threshold - margin`` False, with no interpolation: a convex combination
  cannot leave the range of its inputs by more than float rounding, and ``margin``
  (1e-5 of the largest logit) is far above that rounding;
* only the remaining rectangles (the boundary, a few pixels wide) are interpolated,
  with the reference's own per-pixel arithmetic, so they are bit-identical to it.

Filling a True rectangle is a memory write; interpolating costs ~50 float ops per
pixel, so a mask costs (area inside) x (a copy) + (boundary pixels) x (interpolation).
Masks whose boundary is most of their box (speckle, e.g. random weights) take the
dense path: OpenCV's resize (multi-threaded), whose values are within 4e-5 of the
largest logit of the reference's, thresholded, and every pixel within 3e-4 of the
largest logit of the threshold recomputed with the reference arithmetic. Non-finite
logits take the reference arithmetic everywhere. ``reference_masks`` is the slow,
whole-image definition the tests compare against with ``np.array_equal``.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import IMAGE_SIZE, LOW_RES_SIZE
from .transforms import upscale_logits

# output buffers kept for reuse (per postprocessor): fresh pages cost a page fault
# each on first touch, which dominated post-processing time on our VMs
_POOL_SLOTS = 2
_POOL_MAX_BYTES = 1 << 30
# relative margin around the threshold inside which a rectangle is interpolated:
# float32 rounding of two bilinear steps is < 1e-6 of the largest input
_MARGIN = 1e-5
# interpolate pixel by pixel while the boundary is under this share of the mask's box;
# above it the dense path (OpenCV over the box, exact fix-ups) is cheaper
_SPARSE_SHARE = 0.25
# OpenCV's bilinear resize differs from the reference arithmetic by < 4e-5 of the
# largest logit (measured over image sizes 50 .. 4000 px); pixels within 8x that of
# the threshold are recomputed exactly
_CV2_BOUND = 3e-4


def bilinear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear taps (``align_corners=False``) for one axis: for each output
    index the two input indices and their float32 weights.

    As ATen computes them: ``scale = float(in) / out`` in float32, the source position
    ``scale * (i + 0.5) - 0.5`` rounded once to float32, clamped at 0; index = floor,
    ``l1 = pos - index``, ``l0 = 1 - l1``; the second index stops at the last input.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float64) + 0.5
    src = (np.float64(scale) * dst - 0.5).astype(np.float32)  # one rounding (a fused multiply-add)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    l1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    l0 = (np.float32(1.0) - l1).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, l0, l1


def _exact_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps in float64 (the exact maths, without torch's float32 positions)."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    frac = np.where(i0 == in_size - 1, 0.0, src - i0)
    return i0, np.minimum(i0 + 1, in_size - 1), 1.0 - frac, frac


def composite_matrix(out_size: int, cropped: int, low_res: int = LOW_RES_SIZE, full: int = IMAGE_SIZE) -> np.ndarray:
    """(out_size, low_res) matrix of the reference's per-axis map in exact arithmetic:
    low_res -> full (bilinear), keep the first ``cropped`` entries, -> out_size
    (bilinear; identity when out_size == cropped, as the reference skips that step).
    For analysis and tests; the masks use ``bilinear_taps``' float32 arithmetic."""
    up = np.zeros((full, low_res))
    a0, a1, w0, w1 = _exact_taps(full, low_res)
    np.add.at(up, (np.arange(full), a0), w0)
    np.add.at(up, (np.arange(full), a1), w1)
    up = up[:cropped]
    if out_size == cropped:
        return up
    down = np.zeros((out_size, cropped))
    b0, b1, v0, v1 = _exact_taps(out_size, cropped)
    np.add.at(down, (np.arange(out_size), b0), v0)
    np.add.at(down, (np.arange(out_size), b1), v1)
    return down @ up


@dataclass(frozen=True)
class _Axis:
    """One axis of the two-step map, as index and weight tables.

    Step 1: intermediate index c (0 .. cropped-1) <- low-res ``k0[c], k1[c]`` with
    weights ``v0[c], v1[c]``. Step 2 (absent when ``identity``): output index y <-
    intermediate ``r0[y], r1[y]`` with ``z0[y], z1[y]``. ``lo[y] .. hi[y]``: the low-res
    support of output y; ``group[y]``: its group (outputs with the same support, runs);
    ``g_start, g_stop, g_lo, g_hi``: each group's output range and support.
    """

    size: int
    identity: bool
    k0: np.ndarray
    k1: np.ndarray
    v0: np.ndarray
    v1: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    z0: np.ndarray
    z1: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    group: np.ndarray
    g_start: np.ndarray
    g_stop: np.ndarray
    g_lo: np.ndarray
    g_hi: np.ndarray

    @classmethod
    def build(cls, out_size: int, cropped: int) -> "_Axis":
        k0, k1, v0, v1 = bilinear_taps(IMAGE_SIZE, LOW_RES_SIZE)
        k0, k1, v0, v1 = k0[:cropped], k1[:cropped], v0[:cropped], v1[:cropped]
        identity = out_size == cropped
        if identity:
            r0 = r1 = np.arange(out_size)
            z0, z1 = np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
        else:
            r0, r1, z0, z1 = bilinear_taps(out_size, cropped)
        lo = np.minimum(k0[r0], k0[r1])
        hi = np.maximum(k1[r0], k1[r1])
        change = np.flatnonzero((lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])) + 1
        g_start = np.concatenate([[0], change])
        g_stop = np.concatenate([change, [out_size]])
        group = np.repeat(np.arange(len(g_start)), g_stop - g_start)
        return cls(out_size, identity, k0, k1, v0, v1, r0, r1, z0, z1, lo, hi, group, g_start, g_stop,
                   lo[g_start], hi[g_start])

    # the exact arithmetic, shared by every path ---------------------------------------
    def step(self, values: np.ndarray, out_index: np.ndarray, first: bool, index: np.ndarray | None = None) -> np.ndarray:
        """One bilinear step along axis 0 of ``values``, for the outputs ``out_index``.

        ``first``: step 1 (low-res -> intermediate; ``values`` rows are low-res
        indices, minus ``index`` when that is an int offset); else step 2
        (intermediate -> output; ``values[index[c]]`` holds intermediate c).
        """
        if first:
            i0, i1, w0, w1 = self.k0[out_index], self.k1[out_index], self.v0[out_index], self.v1[out_index]
            if index is not None:
                i0, i1 = i0 - index, i1 - index
        else:
            if self.identity:
                return values[index[out_index]]
            i0, i1 = index[self.r0[out_index]], index[self.r1[out_index]]
            w0, w1 = self.z0[out_index], self.z1[out_index]
        shape = (-1,) + (1,) * (values.ndim - 1)
        return values[i0] * w0.reshape(shape) + values[i1] * w1.reshape(shape)

    def intermediate(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The intermediate indices that outputs ``y`` read, and a lookup table from an
        intermediate index to its position among them."""
        used = np.unique(np.concatenate([self.r0[y], self.r1[y]])) if not self.identity else np.unique(y)
        index = np.zeros(int(used[-1]) + 1 if used.size else 1, np.int64)
        index[used] = np.arange(used.size)
        return used, index


# The reference arithmetic. The two 2-D bilinear steps are separable linear maps, so
# the order is x step 1, x step 2, y step 1, y step 2 (every product and sum in
# float32, in this order, for every pixel): the y steps then gather whole rows.
def _separable(logits: np.ndarray, ay: _Axis, ax: _Axis, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Reference values on the grid ``ys`` x ``xs`` (sorted output rows, columns), float32."""
    cx, cx_index = ax.intermediate(xs)
    cy, cy_index = ay.intermediate(ys)
    k_lo = int(min(ay.k0[cy].min(), ay.k1[cy].min()))
    k_hi = int(max(ay.k0[cy].max(), ay.k1[cy].max())) + 1
    columns = np.ascontiguousarray(logits[k_lo:k_hi].T)  # (256, rows): x steps gather rows
    along_x = ax.step(ax.step(columns, cx, True), xs, False, cx_index)  # (len(xs), rows)
    rows = np.ascontiguousarray(along_x.T)  # (rows, len(xs))
    return ay.step(ay.step(rows, cy, True, k_lo), ys, False, cy_index)  # (len(ys), len(xs))


def _pointwise(flat: np.ndarray, ay: _Axis, ax: _Axis, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Reference values at the pixels (ys[i], xs[i]): ``_separable``'s arithmetic, per pixel."""

    def x1(k, c):  # x step 1 on low-res row k
        row = k * LOW_RES_SIZE
        return flat[row + ax.k0[c]] * ax.v0[c] + flat[row + ax.k1[c]] * ax.v1[c]

    def x2(k):  # x step 2 on low-res row k, at the pixels' columns
        if ax.identity:
            return x1(k, xs)
        return x1(k, ax.r0[xs]) * ax.z0[xs] + x1(k, ax.r1[xs]) * ax.z1[xs]

    def y1(r):  # y step 1 to intermediate row r
        return x2(ay.k0[r]) * ay.v0[r] + x2(ay.k1[r]) * ay.v1[r]

    if ay.identity:
        return y1(ys)
    return y1(ay.r0[ys]) * ay.z0[ys] + y1(ay.r1[ys]) * ay.z1[ys]


def reference_upscale(low_res: np.ndarray, original_size, input_size) -> np.ndarray:
    """(256, 256) logits -> (H, W) float32 logits at the original size: the reference's
    two bilinear steps with torch's taps, each pixel a fixed float32 sequence (within
    ~2e-6 of ``F.interpolate``; the definition the fast masks are bit-exact with)."""
    ay = _Axis.build(int(original_size[0]), int(input_size[0]))
    ax = _Axis.build(int(original_size[1]), int(input_size[1]))
    logits = np.ascontiguousarray(low_res, np.float32).reshape(LOW_RES_SIZE, LOW_RES_SIZE)
    return _separable(logits, ay, ax, np.arange(ay.size), np.arange(ax.size))


def reference_masks(low_res: np.ndarray, original_size, input_size, threshold: float = 0.0) -> np.ndarray:
    """(..., 256, 256) logits -> (..., H, W) masks, ``reference_upscale(...) > threshold``
    over the whole image (slow; what the fast path is tested against)."""
    flat = np.asarray(low_res, np.float32).reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE)
    out = np.stack([reference_upscale(m, original_size, input_size) > threshold for m in flat]) if len(flat) else \
        np.zeros((0, *original_size), bool)
    return out.reshape(*np.shape(low_res)[:-2], *original_size)


def _window(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` (np.minimum / np.maximum) over ``values[lo[g] .. hi[g]]`` along axis 0,
    for every g (windows of 1 to 4 rows)."""
    width = hi - lo + 1
    result = values[lo].copy()
    for step in range(1, int(width.max()) if width.size else 1):
        more = width > step
        if more.all():
            reduce(result, values[lo + step], out=result)
        else:
            result[more] = reduce(result[more], values[lo[more] + step])
    return result


class _Slot:
    __slots__ = ("buffer",)

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer

    def free(self) -> bool:
        # the slot's own reference plus getrefcount's argument: nobody else holds the
        # buffer or a view of it (views keep their base alive)
        return sys.getrefcount(self.buffer) <= 2


class MaskPostprocessor:
    """Turns low-res logits into masks for one (original size, input size) pair.

    Create once per image size (``get_postprocessor`` caches them, per thread);
    buffers are reused between calls, so one object must not be shared by threads.
    ``stats`` counts masks by path: 'empty' (no logit near or above the threshold),
    'box' (boundary interpolated pixel by pixel), 'full' (boundary dense: the separable
    pass over the box).
    """

    def __init__(self, original_size: tuple[int, int], input_size: tuple[int, int], threshold: float = 0.0) -> None:
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.threshold = float(threshold)
        self._ay = _Axis.build(self.original_size[0], self.input_size[0])
        self._ax = _Axis.build(self.original_size[1], self.input_size[1])
        # low-res rows / columns that reach the image (the rest is padding)
        self._k_rows = int(self._ay.hi.max()) + 1
        self._k_cols = int(self._ax.hi.max()) + 1
        self.stats = {"empty": 0, "box": 0, "full": 0, "boundary_pixels": 0}
        self._pool: list[_Slot] = []
        # OpenCV scratch for the dense path, allocated once
        self._scratch_full = np.empty((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        self._scratch_out = np.empty(self.original_size, np.float32)

    # --- one mask ------------------------------------------------------------------------
    def mask_into(self, logits: np.ndarray, out: np.ndarray) -> str:
        """Write one (256, 256) logit map's mask into ``out`` (H, W), which must be all
        False on entry. Returns the path taken: 'empty', 'box' or 'full'."""
        ay, ax, t = self._ay, self._ax, self.threshold
        used = logits[: self._k_rows, : self._k_cols]
        peak = float(np.abs(used).max()) if used.size else 0.0
        if not np.isfinite(peak):  # NaN or inf: leave every decision to the exact arithmetic
            self.stats["full"] += 1
            self._dense(logits, 0, ay.size, 0, ax.size, out, peak)
            return "full"
        margin = _MARGIN * (peak + abs(t)) + 1e-30
        above = used > t + margin
        below = used < t - margin
        rows = np.flatnonzero(~below.all(axis=1))
        if rows.size == 0:
            self.stats["empty"] += 1
            return "empty"
        cols = np.flatnonzero(~below.all(axis=0))
        # groups whose support meets the low-res box of cells that may be True
        gy0 = int(np.searchsorted(ay.g_hi, rows[0], side="left"))
        gy1 = int(np.searchsorted(ay.g_lo, rows[-1], side="right"))
        gx0 = int(np.searchsorted(ax.g_hi, cols[0], side="left"))
        gx1 = int(np.searchsorted(ax.g_lo, cols[-1], side="right"))
        if gy0 >= gy1 or gx0 >= gx1:
            self.stats["empty"] += 1
            return "empty"
        y0, y1 = int(ay.g_start[gy0]), int(ay.g_stop[gy1 - 1])
        x0, x1 = int(ax.g_start[gx0]), int(ax.g_stop[gx1 - 1])
        # low-res estimate of the boundary's share of the box: 2 x 2 cells not all on
        # one side. Speckled masks (random weights) go straight to the dense pass.
        a = above[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        b = below[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if a.shape[0] > 1 and a.shape[1] > 1:
            pure = (a[1:, 1:] & a[:-1, 1:] & a[1:, :-1] & a[:-1, :-1]) | (b[1:, 1:] & b[:-1, 1:] & b[1:, :-1] & b[:-1, :-1])
            if 1.0 - pure.mean() > 2 * _SPARSE_SHARE:
                self.stats["full"] += 1
                self._dense(logits, y0, y1, x0, x1, out, peak)
                return "full"
        # group-level min / max of the support logits: rows first, then columns
        band = used[:, ax.g_lo[gx0] : ax.g_hi[gx1 - 1] + 1]
        glo, ghi = ay.g_lo[gy0:gy1], ay.g_hi[gy0:gy1]
        clo, chi = ax.g_lo[gx0:gx1] - ax.g_lo[gx0], ax.g_hi[gx0:gx1] - ax.g_lo[gx0]
        row_min, row_max = _window(band, glo, ghi, np.minimum), _window(band, glo, ghi, np.maximum)
        inside = _window(row_min.T, clo, chi, np.minimum).T > t + margin
        unsure = ~(inside | (_window(row_max.T, clo, chi, np.maximum).T < t - margin))
        uy, ux = np.nonzero(unsure)
        heights = ay.g_stop[gy0 + uy] - ay.g_start[gy0 + uy]
        widths = ax.g_stop[gx0 + ux] - ax.g_start[gx0 + ux]
        counts = heights * widths
        total = int(counts.sum())
        self.stats["boundary_pixels"] += total
        if total > _SPARSE_SHARE * (y1 - y0) * (x1 - x0):
            self.stats["full"] += 1
            self._dense(logits, y0, y1, x0, x1, out, peak)
            return "full"
        if inside.any():
            # every inside rectangle at once: columns expanded per group row, rows copied
            wide = inside[:, ax.group[x0:x1] - gx0]
            np.take(wide, ay.group[y0:y1] - gy0, axis=0, out=out[y0:y1, x0:x1])
        if total:
            # every pixel of the unsure rectangles, then the reference arithmetic on them
            which = np.repeat(np.arange(uy.size), counts)
            local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            w = widths[which]
            ys = ay.g_start[gy0 + uy][which] + local // w
            xs = ax.g_start[gx0 + ux][which] + local % w
            values = _pointwise(np.ascontiguousarray(logits).reshape(-1), ay, ax, ys, xs)
            out[ys, xs] = values > t
        self.stats["box"] += 1
        return "box"

    def _dense(self, logits: np.ndarray, y0: int, y1: int, x0: int, x1: int, out: np.ndarray, peak: float) -> None:
        """``out[y0:y1, x0:x1] = reference > threshold`` where the boundary is everywhere.

        OpenCV's resize (multi-threaded, ~10x faster than the same arithmetic in numpy)
        gives every pixel to within ``_CV2_BOUND`` of the largest logit; only pixels
        that close to the threshold are recomputed with the reference arithmetic.
        """
        if not np.isfinite(peak):  # NaN / inf spread differently through OpenCV: all exact
            ys, xs = np.arange(y0, y1), np.arange(x0, x1)
            np.greater(_separable(logits, self._ay, self._ax, ys, xs), self.threshold, out=out[y0:y1, x0:x1])
            return
        full = upscale_logits(logits, self.original_size, self.input_size, out=self._scratch_out,
                              scratch=self._scratch_full)
        approx = full[y0:y1, x0:x1]
        np.greater(approx, self.threshold, out=out[y0:y1, x0:x1])
        bound = _CV2_BOUND * (peak + abs(self.threshold))
        # OpenCV again for the search (SIMD, threads): ~10x faster than numpy's nonzero
        near = cv2.findNonZero(cv2.inRange(approx, self.threshold - bound, self.threshold + bound))
        if near is not None:
            near = near.reshape(-1, 2)  # (x, y) pairs
            xs = near[:, 0].astype(np.int64) + x0
            ys = near[:, 1].astype(np.int64) + y0
            values = _pointwise(np.ascontiguousarray(logits).reshape(-1), self._ay, self._ax, ys, xs)
            out[ys, xs] = values > self.threshold
            self.stats["boundary_pixels"] += int(ys.size)

    # --- many masks ---------------------------------------------------------------------
    def _output(self, count: int) -> np.ndarray:
        """A (count, H, W) bool buffer (contents undefined: ``masks_into`` clears it).
        Reuses a pooled buffer that no caller holds any more instead of fresh pages."""
        shape = (count, *self.original_size)
        nbytes = count * self.original_size[0] * self.original_size[1]
        if nbytes == 0 or nbytes > _POOL_MAX_BYTES:
            return np.empty(shape, bool)
        for slot in self._pool:
            if slot.free() and slot.buffer.shape[0] >= count:
                return slot.buffer[:count]
        free = [slot for slot in self._pool if slot.free()]
        buffer = np.empty(shape, bool)
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
        self.masks_into(flat, masks)
        return masks.reshape(*lead, *self.original_size)

    def masks_into(self, low_res: np.ndarray, out: np.ndarray) -> None:
        """(n, 256, 256) logits -> their masks in ``out`` (n, H, W) bool, whatever it held:
        for callers that make masks chunk by chunk into buffers of their own (``segment``
        streams 100 full-size masks into its .npz without holding all 280 MB; ``masks``
        uses it on its pooled buffers)."""
        if len(low_res) != len(out) or out.shape[1:] != self.original_size:
            raise ValueError(f"{len(low_res)} logit maps for masks of shape {out.shape}")
        out.fill(False)
        for i in range(len(out)):
            self.mask_into(np.asarray(low_res[i], np.float32), out[i])


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
