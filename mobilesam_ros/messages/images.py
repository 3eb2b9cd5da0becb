"""Image messages <-> numpy, by field access only: the pixel work is in
:mod:`mobilesam_ros.live.frames`. Incoming sensor_msgs/Image and CompressedImage
(rclpy or rosbags messages alike) become RGB arrays; outgoing Images are built over
buffers allocated once.
"""

from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np

from ..live.frames import decode_compressed, image_to_rgb
from ..live.prompts import stamp_key

_BIG_ENDIAN_HOST = sys.byteorder == "big"


def header_key(header: Any):
    """A header's stamp as the frame key (None for a zero stamp)."""
    return stamp_key(header.stamp.sec, header.stamp.nanosec)


def header_stamp_ns(header: Any) -> int:
    """A header's stamp in nanoseconds (0 for a zero stamp)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB; rgb8 is a zero-copy view on ``msg.data``."""
    return image_to_rgb(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian))


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    return decode_compressed(msg.data, msg.format)


class ImageOut:
    """Builds outgoing sensor_msgs/Image messages over buffers allocated once.

    ``fill(name, header, shape, dtype, encoding)`` returns (msg, view): write the
    pixels into ``view`` (a numpy array over the message's own ``array('B')``
    buffer), then publish ``msg``. rclpy serialises on ``publish``, so the same
    buffer is reused for the next frame of the same size: no per-frame allocation.
    Only the publishing thread may use an instance.
    """

    def __init__(self, image_cls: Any) -> None:
        self._image_cls = image_cls
        self._msgs: dict[str, Any] = {}
        self._views: dict[str, np.ndarray] = {}

    def fill(self, name: str, header: Any, shape: tuple[int, ...], dtype: Any, encoding: str):
        dtype = np.dtype(dtype)
        view = self._views.get(name)
        if view is None or view.shape != tuple(shape) or view.dtype != dtype:
            nbytes = int(np.prod(shape)) * dtype.itemsize
            msg = self._image_cls()
            msg.data = array.array("B", bytes(nbytes))
            # view what the message stores (generated setters may copy what they get)
            view = np.frombuffer(msg.data, dtype).reshape(shape)
            msg.height, msg.width = int(shape[0]), int(shape[1])
            msg.step = int(shape[1]) * (int(shape[2]) if len(shape) > 2 else 1) * dtype.itemsize
            msg.is_bigendian = int(_BIG_ENDIAN_HOST and dtype.itemsize > 1)
            self._msgs[name], self._views[name] = msg, view
        msg = self._msgs[name]
        msg.header = header
        msg.encoding = encoding
        return msg, view
