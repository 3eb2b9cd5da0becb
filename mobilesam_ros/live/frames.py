"""Camera frames as numpy arrays, without ROS: pixel-layout conversion and the
newest-frame slot.

``image_to_rgb`` takes the raw bytes of an image message (any object exposing the
buffer protocol: ``array.array``, ``bytes``, ``memoryview``, ``np.ndarray``) and its
layout fields, and returns an HxWx3 uint8 RGB array. Where the layout allows it
(``rgb8``, with or without ``step`` padding) the result is a *view* on the message
buffer (``np.frombuffer``): no copy. Every other encoding needs exactly one pass
(OpenCV colour conversion), which is also where the copy happens.

Supported ``encoding`` strings (sensor_msgs/image_encodings):

=====================  ===============================================================
rgb8, bgr8, 8UC3        3 x uint8 per pixel (8UC3 is taken as bgr8, OpenCV's order)
rgba8, bgra8, 8UC4      4 x uint8, alpha dropped (8UC4 as bgra8)
mono8, 8UC1             grey, replicated to 3 channels
mono16, 16UC1           grey uint16, scaled to 0..255 by the frame's min..max
                        (``is_bigendian`` honoured)
rgb16, bgr16            3 x uint16, high byte kept
uyvy, yuv422            YUV 4:2:2, U Y0 V Y1 byte order (width must be even)
yuyv, yuv422_yuy2       YUV 4:2:2, Y0 U Y1 V byte order (width must be even)
nv12, nv21              YUV 4:2:0 semi-planar (width and height even)
=====================  ===============================================================

``decode_compressed`` decodes a ``sensor_msgs/CompressedImage`` payload (JPEG or
PNG, 8 or 16 bit, grey, colour or with alpha) the same way.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Hashable

import cv2
import numpy as np

__all__ = [
    "COMPRESSED_FORMATS",
    "ENCODINGS",
    "FrameError",
    "FrameSlot",
    "decode_compressed",
    "image_to_rgb",
    "scale_to_uint8",
]


class FrameError(ValueError):
    """A frame that cannot be converted (unknown encoding, inconsistent layout)."""


@dataclass(frozen=True)
class _Layout:
    channels: int  # samples per pixel in the buffer (for YUV 4:2:2: 2 bytes per pixel)
    dtype: str  # numpy dtype of one sample
    convert: int | None  # cv2 colour conversion to RGB (None: already RGB / handled)
    kind: str = "packed"  # packed | yuv422 | yuv420sp


_U8, _U16 = "u1", "u2"
ENCODINGS: dict[str, _Layout] = {
    "rgb8": _Layout(3, _U8, None),
    "bgr8": _Layout(3, _U8, cv2.COLOR_BGR2RGB),
    "8UC3": _Layout(3, _U8, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout(4, _U8, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout(4, _U8, cv2.COLOR_BGRA2RGB),
    "8UC4": _Layout(4, _U8, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout(1, _U8, cv2.COLOR_GRAY2RGB),
    "8UC1": _Layout(1, _U8, cv2.COLOR_GRAY2RGB),
    "mono16": _Layout(1, _U16, cv2.COLOR_GRAY2RGB),
    "16UC1": _Layout(1, _U16, cv2.COLOR_GRAY2RGB),
    "rgb16": _Layout(3, _U16, None),
    "bgr16": _Layout(3, _U16, cv2.COLOR_BGR2RGB),
    "uyvy": _Layout(2, _U8, cv2.COLOR_YUV2RGB_UYVY, "yuv422"),
    "yuv422": _Layout(2, _U8, cv2.COLOR_YUV2RGB_UYVY, "yuv422"),
    "yuyv": _Layout(2, _U8, cv2.COLOR_YUV2RGB_YUYV, "yuv422"),
    "yuv422_yuy2": _Layout(2, _U8, cv2.COLOR_YUV2RGB_YUYV, "yuv422"),
    "nv12": _Layout(1, _U8, cv2.COLOR_YUV2RGB_NV12, "yuv420sp"),
    "nv21": _Layout(1, _U8, cv2.COLOR_YUV2RGB_NV21, "yuv420sp"),
}

#: what ``decode_compressed`` accepts in ``CompressedImage.format`` (image_transport
#: writes e.g. "jpeg", "png", "rgb8; jpeg compressed bgr8")
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")

_LITTLE_ENDIAN_HOST = sys.byteorder == "little"


def scale_to_uint8(gray: np.ndarray) -> np.ndarray:
    """uint16 (or any numeric) grey -> uint8, mapping the frame's min..max to 0..255.

    A constant frame maps to 0. One pass for min/max, one for the scaling.
    """
    if gray.size == 0:
        return np.zeros(gray.shape, np.uint8)
    lo, hi = float(gray.min()), float(gray.max())
    if hi <= lo:
        return np.zeros(gray.shape, np.uint8)
    scale = 255.0 / (hi - lo)
    return cv2.convertScaleAbs(gray, alpha=scale, beta=-lo * scale)


def _rows(buffer: Any, height: int, row_bytes: int, step: int, what: str) -> np.ndarray:
    """(height, row_bytes) uint8 view over a buffer whose rows are ``step`` bytes apart."""
    try:
        data = np.frombuffer(buffer, np.uint8)
    except (TypeError, ValueError) as exc:
        raise FrameError(f"image data is not a byte buffer ({type(buffer).__name__})") from exc
    needed = step * height
    if data.size < needed:
        raise FrameError(
            f"{what}: data has {data.size} bytes, less than step x height = {step} x {height} = {needed}"
        )
    return data[:needed].reshape(height, step)[:, :row_bytes]


def image_to_rgb(
    buffer: Any, encoding: str, height: int, width: int, step: int, is_bigendian: bool = False
) -> np.ndarray:
    """Raw image bytes + layout -> (height, width, 3) uint8 RGB.

    ``rgb8`` comes back as a read-only view on ``buffer`` (zero-copy; rows may be
    strided when ``step`` has padding). Raises :class:`FrameError` for an unknown
    encoding, a zero-size image, a ``step`` shorter than a row, or too little data.
    """
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise FrameError(f"unsupported encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise FrameError(f"zero-size image ({width}x{height}, encoding {encoding})")
    sample = np.dtype(layout.dtype)
    row_bytes = width * layout.channels * sample.itemsize
    if step < row_bytes:
        raise FrameError(f"step {step} is shorter than one {encoding} row of width {width} ({row_bytes} bytes)")
    what = f"{width}x{height} {encoding}"

    if layout.kind == "yuv420sp":
        if width % 2 or height % 2:
            raise FrameError(f"{encoding} needs an even width and height, got {width}x{height}")
        rows = _rows(buffer, height * 3 // 2, row_bytes, step, what)
        return cv2.cvtColor(rows, layout.convert)
    if layout.kind == "yuv422":
        if width % 2:
            raise FrameError(f"{encoding} needs an even width, got {width}")
        rows = _rows(buffer, height, row_bytes, step, what)
        return cv2.cvtColor(rows.reshape(height, width, 2), layout.convert)

    rows = _rows(buffer, height, row_bytes, step, what)
    if sample.itemsize == 1:
        pixels = rows.reshape(height, width, layout.channels)
        if layout.convert is None:
            return pixels  # rgb8: a view on the message data
        if layout.channels == 1:
            return cv2.cvtColor(pixels[:, :, 0], layout.convert)
        return cv2.cvtColor(pixels, layout.convert)

    if layout.channels == 3:
        # rgb16 / bgr16: the high byte of each sample, picked in place (a strided view),
        # channels reversed for bgr16; one pass makes it contiguous
        high = rows.reshape(height, width, 3, 2)[..., 0 if is_bigendian else 1]
        return np.ascontiguousarray(high if layout.convert is None else high[:, :, ::-1])

    # mono16: reinterpret the bytes (respecting the row stride) as uint16
    order = ">" if is_bigendian else "<"
    samples = rows.view(np.dtype(order + layout.dtype)).reshape(height, width)
    if is_bigendian == _LITTLE_ENDIAN_HOST:
        samples = samples.astype(np.uint16)  # byte-swap to native once
    return cv2.cvtColor(scale_to_uint8(samples), layout.convert)


def decode_compressed(buffer: Any, fmt: str = "") -> np.ndarray:
    """A CompressedImage payload (JPEG / PNG) -> (H, W, 3) uint8 RGB.

    ``fmt`` is the message's ``format`` field; it is only checked for what cannot be
    decoded here (``compressedDepth``, formats other than JPEG/PNG). 16-bit PNGs are
    scaled like ``mono16``.
    """
    lowered = fmt.lower()
    if "compresseddepth" in lowered:
        raise FrameError(f"format '{fmt}' (compressedDepth) is not supported: subscribe to the raw depth image")
    named = [f for f in ("jpeg", "jpg", "png", "tiff", "webp", "bmp", "h264", "hevc", "av1") if f in lowered]
    if named and named[0] not in COMPRESSED_FORMATS:
        raise FrameError(f"compressed format '{fmt}' is not supported (jpeg or png)")
    try:
        data = np.frombuffer(buffer, np.uint8)
    except (TypeError, ValueError) as exc:
        raise FrameError(f"compressed data is not a byte buffer ({type(buffer).__name__})") from exc
    if data.size == 0:
        raise FrameError("compressed image has no data")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise FrameError(f"cannot decode {data.size} bytes of '{fmt or 'unknown format'}' data as JPEG or PNG")
    if image.dtype != np.uint8:
        image = scale_to_uint8(image) if image.ndim == 2 else (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class SlotItem:
    """What the slot holds: the payload and when it arrived (time.monotonic())."""

    payload: Any
    received: float
    key: Hashable = None


#: ``FrameSlot.peek_key`` of a waiting frame that has no stamp (no prompt carries it)
UNSTAMPED = ("unstamped-waiting-frame",)


class FrameSlot:
    """Holds only the newest frame: ``put`` replaces, ``take`` empties.

    The producer (an image callback) never blocks on the consumer (the inference
    worker); frames replaced before the worker took them are counted as dropped.
    ``wait`` also wakes up on ``notify`` (new prompts) and ``close``. Slots of several
    cameras share one ``condition``, so one worker can wait for any of them
    (:class:`~.scheduler.CameraScheduler`).
    """

    def __init__(self, condition: threading.Condition | None = None) -> None:
        self._cond = condition or threading.Condition()
        self._item: SlotItem | None = None
        self._flag = False
        self._closed = False
        self.dropped = 0
        self.received = 0

    def put(self, payload: Any, key: Hashable = None, received: float | None = None) -> bool:
        """Store the newest frame; returns True when an untaken frame was replaced."""
        item = SlotItem(payload, time.monotonic() if received is None else received, key)
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self.received += 1
            self._item = item
            self._cond.notify_all()
        return replaced

    def take(self) -> SlotItem | None:
        with self._cond:
            item, self._item = self._item, None
            return item

    def peek_key(self) -> Hashable:
        """The key of the waiting frame: None when empty, ``UNSTAMPED`` for a frame
        without a stamp (so a prompt before the first frame can still wait for it)."""
        with self._cond:
            if self._item is None:
                return None
            return UNSTAMPED if self._item.key is None else self._item.key

    def ready(self) -> bool:
        """A frame or a notification is waiting (what ``wait`` waits for, closing aside)."""
        with self._cond:
            return self._item is not None or self._flag

    def notify(self) -> None:
        """Wake a waiting consumer without a frame (e.g. prompts changed)."""
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a frame is waiting, ``notify`` was called or the slot closed.

        Returns True when woken for one of those reasons (and clears the notify flag).
        """
        with self._cond:
            woke = self._cond.wait_for(lambda: self._item is not None or self._flag or self._closed, timeout)
            self._flag = False
            return bool(woke)
