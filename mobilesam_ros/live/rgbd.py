"""Objects in 3D from a depth image aligned to the colour image, without ROS.

``objects_from_depth(masks, depth, K)`` turns instance masks (N, H, W) and a depth
image registered to the same pixels (RealSense ``aligned_depth_to_color``, ZED, OAK-D,
Orbbec) into one :class:`Object3D` per mask, in metres, in the camera's *optical*
frame (x right, y down, z forward; REP 103 ``*_optical_frame``):

1. the mask is eroded by ``erode_px`` pixels: its edge is where flying pixels (depth
   interpolated between the object and what is behind it) and background leak in;
2. invalid depth (0, NaN, inf) and depth outside ``[min_depth, max_depth]`` is dropped;
3. the depths are clustered along z (a histogram in log-depth, bins of ``bin_width``
   = 1 % of the depth; bins holding fewer than ``noise_fraction`` of the points are
   gaps, so a thin trail of flying pixels does not join two surfaces) and the
   *nearest* cluster holding at least ``front_fraction`` of the largest one is kept:
   a mask that leaks onto the wall behind a cup gives the cup, a few pixels of an
   occluder in front do not win;
4. a median / MAD cut (``mad_k`` robust sigmas) trims the cluster's tails;
5. the inliers are back-projected with ``K`` (pinhole: X = (u - cx) z / fx, Y = (v -
   cy) z / fy, u, v = pixel centres) into ``centroid`` (their mean, each weighted by the
   surface area its pixel covers, z^3 on a plane, so a tilted surface is not pulled
   towards the camera), an axis-aligned
   box from robust percentiles (``percentile`` .. 100 - ``percentile`` per axis),
   widened in x and y by the erosion border so it covers the object's silhouette,
   ``num_points`` and ``median_depth``.

Too few inliers (``min_points``) gives ``None`` for that object; the returned
:class:`Objects3D` (a list) says why in ``.reasons``.

**Distortion.** Pixels are back-projected with ``K`` alone: the images are assumed
rectified (no lens distortion), which is what aligned-depth drivers publish (the depth
is registered to the colour camera's pixels; RealSense D4xx colour streams report
zero or near-zero distortion). For a camera with noticeable distortion, feed the
rectified colour image (``image_rect_color``) and the depth aligned to it, with the
CameraInfo of the rectified image.

**Depth of another size** than the masks is refused (:class:`DepthError`) unless it
is the same view at a uniform scale (same aspect ratio, e.g. 320x240 depth for a
640x480 colour image): then :func:`fit_masks_to_depth` samples the masks at the depth
pixels and scales ``K`` exactly.

:class:`DepthPairer` pairs depth frames with colour frames by stamp (the same stamp,
or the nearest within ``max_dt``), ROS-free; :func:`depth_to_array` reads 16UC1 /
32FC1 message buffers without copying.

Everything per point is vectorised numpy; the Python loop runs once per object.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from .prompts import StreamClock

__all__ = [
    "DEPTH_ENCODINGS",
    "DepthError",
    "DepthOptions",
    "DepthPairer",
    "Object3D",
    "Objects3D",
    "depth_to_array",
    "draw_distances",
    "fit_masks_to_depth",
    "intrinsics_matrix",
    "objects_from_depth",
    "scale_intrinsics",
]


class DepthError(ValueError):
    """Depth that cannot be used with these masks / intrinsics (size, encoding, K)."""


#: depth encodings read by :func:`depth_to_array`: numpy dtype, and what "no data" is
DEPTH_ENCODINGS = {
    "16UC1": np.dtype(np.uint16),  # millimetres (REP 118), 0 = no data
    "mono16": np.dtype(np.uint16),  # some drivers label 16-bit depth mono16
    "32FC1": np.dtype(np.float32),  # metres, NaN / 0 / +-inf = no data
}


@dataclass(frozen=True)
class DepthOptions:
    """How depth becomes 3D objects (see the module docstring for the steps)."""

    min_depth: float = 0.1  # m; nearer points are dropped (also drops 0 = no data)
    max_depth: float = 10.0  # m; farther points are dropped
    erode_px: int = 3  # mask erosion radius before sampling depth
    min_points: int = 20  # fewer inliers: no 3D for the object
    bin_width: float = 0.01  # depth histogram bin, relative to depth (0.01 = 1 %)
    noise_fraction: float = 0.002  # a bin with fewer points than this share of them is a gap
    front_fraction: float = 0.3  # a nearer cluster is kept if it has this share of the largest
    mad_k: float = 3.0  # median / MAD cut in robust sigmas (1.4826 MAD)
    percentile: float = 1.0  # box = [p, 100 - p] percentiles per axis
    max_samples: int = 2000  # a larger mask is sampled on a grid of every s-th pixel; 0 = every pixel
    max_points: int = 0  # inlier points kept in Object3D.points (evenly subsampled); 0 = all
    float_scale: float = 1.0  # metres per unit of float depth (32FC1: metres)

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.min_depth < self.max_depth:
            problems.append(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.erode_px < 0:
            problems.append(f"erode_px must be >= 0, got {self.erode_px}")
        if self.min_points < 1:
            problems.append(f"min_points must be >= 1, got {self.min_points}")
        if not 0 < self.bin_width < 1:
            problems.append(f"bin_width must be in (0, 1), got {self.bin_width}")
        if not 0 <= self.front_fraction <= 1 or not 0 <= self.noise_fraction < 1:
            problems.append("front_fraction must be in [0, 1] and noise_fraction in [0, 1)")
        if self.mad_k <= 0 or not 0 <= self.percentile < 50 or self.float_scale <= 0:
            problems.append("mad_k > 0, 0 <= percentile < 50 and float_scale > 0 are required")
        if self.max_samples < 0 or self.max_points < 0:
            problems.append("max_samples and max_points must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Object3D:
    """One object seen in depth; metres, camera optical frame (x right, y down, z forward)."""

    centroid: np.ndarray  # (3,) area-weighted (z^3) mean of the inlier points
    center: np.ndarray  # (3,) centre of the axis-aligned box
    size: np.ndarray  # (3,) extent of the axis-aligned box (x, y, z)
    num_points: int  # inlier points measured (of the sampled pixels)
    median_depth: float  # median z of the inliers
    points: np.ndarray = field(repr=False)  # (M, 3) float32 inliers (subsampled to max_points)
    pixels: np.ndarray = field(repr=False)  # (M, 2) int32 (row, col) of those points in the depth image

    @property
    def distance(self) -> float:
        """Straight-line distance from the camera to the centroid (m)."""
        return float(np.linalg.norm(self.centroid))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no point arrays)."""
        return {
            "centroid": [round(float(v), 5) for v in self.centroid],
            "center": [round(float(v), 5) for v in self.center],
            "size": [round(float(v), 5) for v in self.size],
            "num_points": int(self.num_points),
            "median_depth": round(float(self.median_depth), 5),
            "distance": round(self.distance, 5),
        }


class Objects3D(list):
    """``objects_from_depth``'s result: a list of N ``Object3D | None``; ``reasons[i]``
    says why object i has no 3D (None where it has)."""

    def __init__(self, items=(), reasons=()) -> None:
        super().__init__(items)
        self.reasons: list[str | None] = list(reasons)


# --- intrinsics and sizes ------------------------------------------------------------------
def intrinsics_matrix(K: Any) -> np.ndarray:
    """fx, fy, cx, cy (4 numbers), a 3x3 matrix or CameraInfo.k (9 numbers) -> 3x3 float64."""
    k = np.asarray(K, np.float64).ravel()
    if k.size == 4:
        fx, fy, cx, cy = k
        k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64)
    if k.size != 9:
        raise DepthError(f"intrinsics must be fx, fy, cx, cy or a 3x3 matrix, got {k.size} numbers")
    K = k.reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DepthError(f"intrinsics need finite values and fx, fy > 0, got fx={K[0, 0]:g}, fy={K[1, 1]:g}")
    return K


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """K of an image of ``from_size`` (h, w) for the same view resampled to ``to_size``.

    Raises DepthError when the aspect ratios differ by more than one pixel: then the
    two images do not show the same view at one scale and nothing says how they map.
    """
    (H, W), (h, w) = from_size, to_size
    if (H, W) == (h, w):
        return K
    sx, sy = w / W, h / H
    if abs(sx - sy) * max(W, H) > 1.0:
        raise DepthError(
            f"depth {w}x{h} and colour {W}x{H} differ in aspect ratio: they are not the same view at one "
            "scale, so the depth cannot be mapped onto the masks; publish depth aligned to the colour image "
            "(RealSense: align_depth.enable:=true, topic aligned_depth_to_color/image_raw)"
        )
    out = np.array(K, np.float64, copy=True)
    # pixel centres: u' + 0.5 = (u + 0.5) * s
    out[0, 0] *= sx
    out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5
    out[1, 1] *= sy
    out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5
    return out


def fit_masks_to_depth(masks: np.ndarray, K: Any, depth_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks (N, H, W) and their K -> masks sampled at the pixels of a depth image of
    ``depth_shape`` (h, w) showing the same view at a uniform scale, and K for it.
    Same size: returned unchanged. Another aspect ratio: DepthError."""
    K = intrinsics_matrix(K)
    H, W = masks.shape[1:]
    h, w = int(depth_shape[0]), int(depth_shape[1])
    if (h, w) == (H, W):
        return masks, K
    K2 = scale_intrinsics(K, (H, W), (h, w))
    out = np.empty((len(masks), h, w), bool)
    for i, mask in enumerate(masks):
        out[i] = cv2.resize(mask.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).view(bool)
    return out, K2


# --- depth buffers -------------------------------------------------------------------------
def depth_to_array(buffer: Any, encoding: str, height: int, width: int, step: int,
                   is_bigendian: bool = False) -> np.ndarray:
    """A depth message's bytes -> (height, width) uint16 (16UC1, mono16) or float32
    (32FC1), a view on the buffer when the byte order is the host's (else one copy)."""
    dtype = DEPTH_ENCODINGS.get(encoding)
    if dtype is None:
        raise DepthError(f"depth encoding '{encoding}' is not supported (16UC1 in mm, 32FC1 in m)")
    if height <= 0 or width <= 0:
        raise DepthError(f"depth image has size {width}x{height}")
    row = width * dtype.itemsize
    if step < row:
        raise DepthError(f"depth step {step} is smaller than width x {dtype.itemsize} = {row}")
    data = np.frombuffer(buffer, np.uint8)
    if data.size < step * height:
        raise DepthError(f"depth data has {data.size} bytes, less than step x height = {step * height}")
    rows = data[: step * height].reshape(height, step)[:, :row]
    swap = bool(is_bigendian) != (sys.byteorder == "big")
    if swap:
        return rows.copy().view(dtype.newbyteorder()).astype(dtype)
    if step % dtype.itemsize == 0 and rows.ctypes.data % dtype.itemsize == 0:
        return rows.view(dtype).reshape(height, width)
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width)


def _metres(values: np.ndarray, scale: float) -> np.ndarray:
    """Depth samples -> float32 metres (invalid values stay 0 / NaN / inf)."""
    if values.dtype.kind in "ui":
        return values.astype(np.float32) * np.float32(scale)
    z = values.astype(np.float32, copy=False)
    return z * np.float32(scale) if scale != 1.0 else z


# --- the measurement -------------------------------------------------------------------------
def _front_cluster(z: np.ndarray, opts: DepthOptions) -> np.ndarray:
    """Boolean selection of ``z`` (> 0) in its nearest substantial depth cluster."""
    log_z = np.log(z)
    width = math.log1p(opts.bin_width)
    bins = ((log_z - log_z.min()) * (1.0 / width)).astype(np.int32)
    counts = np.bincount(bins)
    occupied = counts >= max(2.0, opts.noise_fraction * z.size)
    if len(occupied) > 2:
        occupied[1:-1] |= occupied[:-2] & occupied[2:]  # one empty bin (quantisation) is not a gap
    edges = np.flatnonzero(np.diff(np.concatenate(([0], occupied.view(np.int8), [0]))))
    if edges.size == 0:  # the points are spread too thin for any bin to count: no clustering
        return np.ones(z.shape, bool)
    starts, ends = edges[0::2], edges[1::2]
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    mass = cumulative[ends] - cumulative[starts]
    k = int(np.flatnonzero(mass >= opts.front_fraction * mass.max())[0])  # nearest substantial cluster
    return (bins >= starts[k]) & (bins < ends[k])


def _median(values: np.ndarray) -> float:
    """Median (upper middle element) with one partition and none of np.median's checks."""
    k = values.size // 2
    return float(np.partition(values, k)[k])


def objects_from_depth(
    masks: np.ndarray,
    depth: np.ndarray,
    K: Any,
    depth_scale: float = 0.001,
    boxes: np.ndarray | None = None,
    **options: Any,
) -> Objects3D:
    """3D position and extent of each masked object from an aligned depth image.

    masks: (N, H, W) bool instance masks on the depth image's pixels.
    depth: (H, W) uint16 (``depth_scale`` metres per unit: 0.001 for millimetres; 0 =
        no data) or float32 (metres, times ``float_scale``; NaN / 0 / inf = no data).
    K: 3x3 intrinsics of these pixels (or fx, fy, cx, cy).
    boxes: optional (N, 4) x0, y0, x1, y1 (exclusive) pixel boxes of the masks (the
        segmenter has them; saves finding them again); mask pixels outside are ignored.
    options: the fields of :class:`DepthOptions` (``min_depth``, ``max_depth``,
        ``erode_px``, ``min_points``, ``front_fraction``, ``percentile``, ``max_samples``,
        ``max_points``, ...), or ``options=DepthOptions(...)``.

    Returns an :class:`Objects3D`: N items, each an :class:`Object3D` or None (too few
    valid points; ``.reasons[i]`` says why). See the module docstring for the method.
    """
    opts = options.pop("options", None) or DepthOptions()
    if options:
        unknown = set(options) - set(DepthOptions.names())
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))} (known: {', '.join(DepthOptions.names())})")
        opts = DepthOptions(**{**{n: getattr(opts, n) for n in DepthOptions.names()}, **options})
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise DepthError(f"masks must be (N, H, W), got shape {masks.shape}")
    if masks.dtype != bool:
        masks = masks != 0
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.dtype.kind not in "uif":
        raise DepthError(f"depth must be an (H, W) integer or float image, got {depth.dtype} {depth.shape}")
    if depth.shape != masks.shape[1:]:
        raise DepthError(
            f"depth {depth.shape[1]}x{depth.shape[0]} and masks {masks.shape[2]}x{masks.shape[1]} differ in size "
            "(resample with fit_masks_to_depth when the depth shows the same view at another scale)"
        )
    if boxes is not None and len(boxes) != len(masks):
        raise DepthError(f"{len(boxes)} boxes for {len(masks)} masks")
    K = intrinsics_matrix(K)
    if depth.dtype.kind in "ui" and not depth_scale > 0:
        raise DepthError(f"depth_scale must be > 0, got {depth_scale}")
    scale = depth_scale if depth.dtype.kind in "ui" else opts.float_scale
    r = int(opts.erode_px)
    # a square kernel: separable, several times faster than a disk, the same within a pixel or two
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1)) if r > 0 else None
    out = Objects3D()
    H, W = depth.shape
    for i, mask in enumerate(masks):
        if boxes is None:
            x0, y0, w, h = cv2.boundingRect(mask.view(np.uint8))
        else:
            bx0, by0, bx1, by1 = (float(v) for v in boxes[i])
            x0, y0 = max(0, math.floor(bx0)), max(0, math.floor(by0))
            w, h = min(W, math.ceil(bx1)) - x0, min(H, math.ceil(by1)) - y0
        if w <= 0 or h <= 0:
            obj, reason = None, "empty mask"
        else:
            obj, reason = _measure(mask, depth, x0, y0, w, h, K, scale, kernel, opts)
        out.append(obj)
        out.reasons.append(reason)
    return out


def _measure(mask, depth, x0, y0, w, h, K, scale, kernel, opts: DepthOptions) -> tuple[Object3D | None, str | None]:
    """One object: the steps of the module docstring on the mask's box."""
    crop = mask[y0:y0 + h, x0:x0 + w]
    selected, eroded_ok = crop, False
    if kernel is not None:
        eroded = cv2.erode(crop.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        count = cv2.countNonZero(eroded)
        # a thin object erodes away: then its whole mask is sampled (the clustering still guards)
        eroded_ok = count >= opts.min_points
        if eroded_ok:
            selected = eroded.view(bool)
    if not eroded_ok:
        count = cv2.countNonZero(crop.view(np.uint8))
        if count == 0:
            return None, "empty mask"
    # a large mask is sampled on a regular grid of every s-th pixel (aligned to the image)
    s = max(1, math.ceil(math.sqrt(count / opts.max_samples))) if opts.max_samples else 1
    oy, ox = (-y0) % s, (-x0) % s
    grid = selected[oy::s, ox::s]
    index = np.flatnonzero(grid)  # grid-flat indices of the sampled pixels, C order as grid's True
    z = _metres(depth[y0 + oy:y0 + h:s, x0 + ox:x0 + w:s][grid], scale)
    valid = (z >= opts.min_depth) & (z <= opts.max_depth)  # also drops 0, NaN, inf
    n_valid = int(np.count_nonzero(valid))
    if n_valid < opts.min_points:
        return None, (
            f"{n_valid} valid depth point(s) of {index.size} sampled (need {opts.min_points}; "
            f"depth 0 / NaN / outside [{opts.min_depth:g}, {opts.max_depth:g}] m is invalid)"
        )
    if n_valid < z.size:
        index, z = index[valid], z[valid]
    keep = _front_cluster(z, opts)
    z_in = z[keep]
    median = _median(z_in)
    mad = _median(np.abs(z_in - median))
    # a flat, quantised surface has MAD ~ 0: never cut closer than one histogram bin
    tolerance = max(opts.mad_k * 1.4826 * mad, opts.bin_width * median)
    keep[keep] = np.abs(z_in - median) <= tolerance
    n_in = int(np.count_nonzero(keep))
    if n_in < opts.min_points:
        return None, f"{n_in} inlier point(s) after outlier rejection (need {opts.min_points})"
    index, z = index[keep], z[keep]
    grid_rows, grid_cols = np.divmod(index, grid.shape[1])
    rows = (grid_rows * s + (y0 + oy)).astype(np.int32)
    cols = (grid_cols * s + (x0 + ox)).astype(np.int32)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    xyz = np.empty((3, n_in), np.float32)  # one contiguous row per axis (fast partitions)
    np.multiply(cols - np.float32(cx), z, out=xyz[0])
    xyz[0] *= np.float32(1.0 / fx)
    np.multiply(rows - np.float32(cy), z, out=xyz[1])
    xyz[1] *= np.float32(1.0 / fy)
    xyz[2] = z
    # robust box and median depth from one partition per axis (nearest-rank percentiles)
    k_lo = int(round(opts.percentile / 100.0 * (n_in - 1)))
    k_hi, k_mid = n_in - 1 - k_lo, n_in // 2
    ranked = np.partition(xyz, sorted({k_lo, k_mid, k_hi}), axis=1)
    lo, hi = ranked[:, k_lo].astype(np.float64), ranked[:, k_hi].astype(np.float64)
    median = float(ranked[2, k_mid])
    # a pixel sees a patch of area z^2 cos(ray) / (fx fy cos(incidence)), which is z^3 / (fx fy d)
    # on any plane at distance d: weighting by z^3 makes the centroid the surface's centre, not
    # pulled towards its nearer (denser sampled) part
    weights = z * z * z
    centroid = (xyz @ weights).astype(np.float64) / float(weights.sum(dtype=np.float64))
    size = hi - lo
    if eroded_ok:  # the box covers the silhouette, not only the eroded interior
        r = (kernel.shape[0] - 1) / 2
        size[0] += 2 * r * median / fx
        size[1] += 2 * r * median / fy
    center = (lo + hi) / 2.0
    if opts.max_points and n_in > opts.max_points:
        pick = np.linspace(0, n_in - 1, opts.max_points).astype(np.int64)
        xyz, rows, cols = xyz[:, pick], rows[pick], cols[pick]
    return Object3D(centroid, center, size, n_in, median, xyz.T.copy(), np.stack([rows, cols], axis=1)), None


# --- pairing depth with colour -----------------------------------------------------------------
@dataclass
class _Match:
    depth: Any = None  # the payload (a message) of the best depth frame so far
    dt: float = math.inf  # |depth stamp - colour stamp| (s)
    final: bool = False  # a depth frame at or after the colour stamp has arrived: no better one will


class DepthPairer:
    """Pairs depth frames with colour frames by stamp, without ROS (message_filters'
    ApproximateTime idea for two streams, nearest stamp within ``max_dt`` seconds).

    Stamps are nanoseconds (int). The producer side (subscription callbacks) calls
    :meth:`add_depth` for each depth frame and :meth:`colour_arrived` for each colour
    frame; the consumer (the worker) calls :meth:`pin` when it takes a colour frame for
    processing and :meth:`lookup` when it needs that frame's depth.

    Memory stays bounded: the last ``depth_queue`` depth frames (a colour frame may
    arrive after its depth), the best match of the last ``pending`` colour frames (the
    worker always takes the newest one), and of the last ``pinned`` frames taken by
    the worker (their results can be published again while their embeddings are
    cached). A match is *final* once a depth frame stamped at or after the colour
    frame has arrived (stamps increase, so later ones are farther) or the exact stamp
    has; :meth:`lookup` waits up to ``wait`` seconds for that, then returns the best
    match within ``max_dt`` or None.
    """

    def __init__(self, max_dt: float, depth_queue: int = 10, pending: int = 4, pinned: int = 8) -> None:
        self.max_dt = float(max_dt)
        self._max_dt_ns = int(round(self.max_dt * 1e9))
        self._recent: deque[tuple[int, Any]] = deque(maxlen=max(1, depth_queue))
        self._pending: OrderedDict[int, _Match] = OrderedDict()
        self._pinned: OrderedDict[int, _Match] = OrderedDict()
        self._sizes = (max(1, pending), max(1, pinned))
        self._cond = threading.Condition()
        self.newest_depth_ns: int | None = None
        self._clocks = (StreamClock(), StreamClock())  # depth, colour
        #: times time went backwards on either stream (everything kept was dropped)
        self.restarts = 0

    def _restart_if_back(self, stream: int, stamp_ns: int) -> None:
        """Time went backwards on a stream (a bag loop, a simulator reset): depth frames and
        matches of the old timeline would pair with none of the new one, or wrongly. Under
        the lock."""
        if self._clocks[stream].advance(stamp_ns / 1e9) is None:
            return
        self._recent.clear()
        self._pending.clear()
        self._pinned.clear()
        self.newest_depth_ns = None
        self._clocks[1 - stream].newest = None
        self.restarts += 1

    @staticmethod
    def _offer(match: _Match, colour_ns: int, depth_ns: int, depth: Any) -> None:
        dt = abs(depth_ns - colour_ns) / 1e9
        if dt < match.dt:
            match.depth, match.dt = depth, dt
        if depth_ns >= colour_ns:
            match.final = True

    def add_depth(self, stamp_ns: int, depth: Any) -> None:
        with self._cond:
            self._restart_if_back(0, stamp_ns)
            self._recent.append((stamp_ns, depth))
            self.newest_depth_ns = stamp_ns if self.newest_depth_ns is None else max(self.newest_depth_ns, stamp_ns)
            for table in (self._pending, self._pinned):
                for colour_ns, match in table.items():
                    if not match.final:
                        self._offer(match, colour_ns, stamp_ns, depth)
            self._cond.notify_all()

    def colour_arrived(self, stamp_ns: int) -> None:
        with self._cond:
            self._restart_if_back(1, stamp_ns)
            if stamp_ns in self._pending or stamp_ns in self._pinned:
                return
            match = _Match()
            for depth_ns, depth in self._recent:
                self._offer(match, stamp_ns, depth_ns, depth)
            self._pending[stamp_ns] = match
            while len(self._pending) > self._sizes[0]:
                self._pending.popitem(last=False)

    def pin(self, stamp_ns: int) -> None:
        """The worker took this colour frame: keep its match while it may be published."""
        with self._cond:
            self._pin(stamp_ns)

    def _pin(self, stamp_ns: int) -> _Match:
        match = self._pending.pop(stamp_ns, None)
        if match is None:
            match = self._pinned.pop(stamp_ns, None)
        if match is None:  # not seen arriving (pairing started late, or a library user): match the queue
            match = _Match()
            for depth_ns, depth in self._recent:
                self._offer(match, stamp_ns, depth_ns, depth)
        self._pinned[stamp_ns] = match
        while len(self._pinned) > self._sizes[1]:
            self._pinned.popitem(last=False)
        return match

    def lookup(self, stamp_ns: int, wait: float = 0.0) -> tuple[Any, float] | None:
        """(depth payload, |dt| s) paired with this colour stamp, or None when no depth
        frame within ``max_dt`` arrived (waiting up to ``wait`` s for one)."""
        with self._cond:
            match = self._pinned.get(stamp_ns) or self._pin(stamp_ns)
            if wait > 0 and not (match.final or match.dt == 0.0):
                self._cond.wait_for(lambda: match.final or match.dt == 0.0, timeout=wait)
            if match.depth is None or match.dt > self.max_dt + 1e-9:
                return None
            return match.depth, match.dt


# --- drawing ---------------------------------------------------------------------------------
def draw_distances(image: np.ndarray, boxes: np.ndarray, objects: list[Object3D | None]) -> np.ndarray:
    """Write each object's distance (|centroid|: "1.23 m", or "no depth") under its box's top-left
    corner, in place on an RGB uint8 image (an overlay); returns it."""
    font_scale = max(0.4, max(image.shape[:2]) / 1500)
    for box, obj in zip(np.asarray(boxes, np.float32).reshape(-1, 4), objects):
        x0, y0 = int(box[0]), int(box[1])
        text = "no depth" if obj is None else f"{obj.distance:.2f} m"
        org = (x0 + 2, min(image.shape[0] - 4, max(y0 + 14, 14) + int(22 * font_scale / 0.4)))
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
