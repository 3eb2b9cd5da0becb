"""Pixel-layout conversion and the newest-frame slot (no ROS)."""

from __future__ import annotations

import array
import threading
import time

import cv2
import numpy as np
import pytest

from mobilesam_ros.live.frames import ENCODINGS, FrameError, FrameSlot, decode_compressed, image_to_rgb, scale_to_uint8

H, W = 6, 8
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _pad(rows: np.ndarray, pad: int) -> tuple[bytes, int]:
    """(H, row_bytes) uint8 -> bytes with ``pad`` extra bytes per row, and the step."""
    h, row = rows.shape
    out = np.full((h, row + pad), 0xAB, np.uint8)
    out[:, :row] = rows
    return out.tobytes(), row + pad


def _packed(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels).view(np.uint8).reshape(pixels.shape[0], -1)


@pytest.mark.parametrize("pad", [0, 5])
def test_rgb8_is_a_zero_copy_view(pad):
    data, step = _pad(_packed(RGB), pad)
    buf = array.array("B", data)
    out = image_to_rgb(buf, "rgb8", H, W, step)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)
    assert np.shares_memory(out, np.frombuffer(buf, np.uint8))


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    "encoding, make",
    [
        ("bgr8", lambda: RGB[:, :, ::-1]),
        ("8UC3", lambda: RGB[:, :, ::-1]),
        ("rgba8", lambda: np.dstack([RGB, np.full((H, W), 7, np.uint8)])),
        ("bgra8", lambda: np.dstack([RGB[:, :, ::-1], np.full((H, W), 7, np.uint8)])),
        ("8UC4", lambda: np.dstack([RGB[:, :, ::-1], np.full((H, W), 7, np.uint8)])),
    ],
)
def test_colour_encodings(encoding, make, pad):
    data, step = _pad(_packed(make()), pad)
    np.testing.assert_array_equal(image_to_rgb(data, encoding, H, W, step), RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(encoding):
    gray = RGB[:, :, 0]
    data, step = _pad(gray, 2)
    out = image_to_rgb(data, encoding, H, W, step)
    np.testing.assert_array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_mono16_scaled_by_frame_range(encoding, bigendian):
    depth = np.linspace(1000, 5000, H * W).reshape(H, W).astype(np.uint16)
    raw = depth.astype(">u2" if bigendian else "<u2")
    data, step = _pad(_packed(raw), 4)
    out = image_to_rgb(data, encoding, H, W, step, is_bigendian=bigendian)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    expected = np.round((depth.astype(np.float64) - 1000) * 255 / 4000).astype(np.uint8)
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1
    assert (out[:, :, 0] == out[:, :, 2]).all()


def test_constant_mono16_maps_to_zero():
    assert scale_to_uint8(np.full((3, 3), 700, np.uint16)).max() == 0


def test_rgb16_keeps_high_byte():
    wide = RGB.astype(np.uint16) * 257
    out = image_to_rgb(_packed(wide.astype("<u2")).tobytes(), "rgb16", H, W, W * 6)
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize(
    "encoding, code",
    [
        ("yuyv", cv2.COLOR_YUV2RGB_YUYV),
        ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUYV),
        ("uyvy", cv2.COLOR_YUV2RGB_UYVY),
        ("yuv422", cv2.COLOR_YUV2RGB_UYVY),
    ],
)
def test_yuv422(encoding, code):
    packed = RNG.integers(16, 235, (H, W * 2), dtype=np.uint8)
    data, step = _pad(packed, 6)
    out = image_to_rgb(data, encoding, H, W, step)
    np.testing.assert_array_equal(out, cv2.cvtColor(packed.reshape(H, W, 2), code))


@pytest.mark.parametrize("encoding, code", [("nv12", cv2.COLOR_YUV2RGB_NV12), ("nv21", cv2.COLOR_YUV2RGB_NV21)])
def test_nv12_nv21(encoding, code):
    planes = RNG.integers(16, 235, (H * 3 // 2, W), dtype=np.uint8)
    data, step = _pad(planes, 2)
    np.testing.assert_array_equal(image_to_rgb(data, encoding, H, W, step), cv2.cvtColor(planes, code))


def test_every_listed_encoding_converts():
    for encoding, layout in ENCODINGS.items():
        rows = H * 3 // 2 if layout.kind == "yuv420sp" else H
        step = W * layout.channels * np.dtype(layout.dtype).itemsize
        out = image_to_rgb(bytes(step * rows), encoding, H, W, step)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8, encoding


@pytest.mark.parametrize(
    "args, message",
    [
        ((b"\0" * 144, "rgb9", H, W, 24), "unsupported encoding 'rgb9'"),
        ((b"\0" * 100, "rgb8", H, W, 24), "less than step x height"),
        ((b"", "rgb8", 0, 0, 0), "zero-size image"),
        ((b"\0" * 144, "rgb8", H, W, 10), "shorter than one rgb8 row"),
        ((b"\0" * 144, "yuyv", H, 7, 24), "even width"),
        ((b"\0" * 144, "nv12", 5, W, 8), "even width and height"),
        ((None, "rgb8", H, W, 24), "not a byte buffer"),
    ],
)
def test_bad_frames_raise_frame_error(args, message):
    with pytest.raises(FrameError, match=message):
        image_to_rgb(*args)


def test_compressed_png_is_exact():
    enc = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))[1]
    np.testing.assert_array_equal(decode_compressed(array.array("B", enc.tobytes()), "png"), RGB)


def test_compressed_jpeg_channel_order():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220  # RGB red
    enc = cv2.imencode(".jpg", cv2.cvtColor(red, cv2.COLOR_RGB2BGR))[1]
    out = decode_compressed(enc.tobytes(), "rgb8; jpeg compressed bgr8")
    assert out.shape == (32, 32, 3)
    assert abs(int(out[..., 0].mean()) - 220) < 6 and out[..., 2].mean() < 10


def test_compressed_grey_alpha_and_16bit():
    gray = RGB[:, :, 0]
    out = decode_compressed(cv2.imencode(".png", gray)[1].tobytes(), "mono8; png compressed")
    np.testing.assert_array_equal(out, np.dstack([gray] * 3))
    bgra = np.dstack([RGB[:, :, ::-1], np.full((H, W), 255, np.uint8)])
    np.testing.assert_array_equal(decode_compressed(cv2.imencode(".png", bgra)[1].tobytes(), "png"), RGB)
    depth = np.linspace(0, 60000, H * W).reshape(H, W).astype(np.uint16)
    out = decode_compressed(cv2.imencode(".png", depth)[1].tobytes(), "16UC1; png compressed")
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


@pytest.mark.parametrize(
    "data, fmt, message",
    [
        (b"not an image", "jpeg", "cannot decode"),
        (b"", "png", "no data"),
        (b"\0" * 20, "16UC1; compressedDepth png", "compressedDepth"),
        (b"\0" * 20, "h264", "not supported"),
    ],
)
def test_bad_compressed(data, fmt, message):
    with pytest.raises(FrameError, match=message):
        decode_compressed(data, fmt)


# --- newest-frame slot ---------------------------------------------------------------------
def test_slot_keeps_only_the_newest_and_counts_drops():
    slot = FrameSlot()
    assert slot.take() is None
    assert slot.put("a", key=1) is False
    assert slot.put("b", key=2) is True
    assert slot.put("c", key=3) is True
    assert slot.peek_key() == 3
    item = slot.take()
    assert item.payload == "c" and item.key == 3
    assert slot.take() is None
    assert (slot.received, slot.dropped) == (3, 2)


def test_slot_wait_wakes_on_frame_notify_and_close():
    slot = FrameSlot()
    assert slot.wait(0.01) is False
    threading.Timer(0.05, slot.notify).start()
    t0 = time.monotonic()
    assert slot.wait(2.0) is True
    assert time.monotonic() - t0 < 1.5
    assert slot.wait(0.01) is False  # the notify flag was consumed
    slot.put("x")
    assert slot.wait(0.01) is True  # a waiting frame wakes at once
    slot.take()
    threading.Timer(0.05, slot.close).start()
    assert slot.wait(2.0) is True and slot.closed


def test_slot_producer_never_blocks():
    slot = FrameSlot()
    t0 = time.perf_counter()
    for i in range(10000):
        slot.put(i)
    assert time.perf_counter() - t0 < 1.0
    assert slot.take().payload == 9999 and slot.dropped == 9999
