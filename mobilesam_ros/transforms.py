"""Pre- and post-processing shared by every runtime (numpy, OpenCV, Pillow; no torch).

These functions decide parity with the reference once, for all engines:

* resize: longest side to 1024, new size ``int(x * 1024 / max(h, w) + 0.5)``, with
  Pillow's bilinear filter, which antialiases when downscaling like the reference
  (OpenCV's INTER_LINEAR / INTER_AREA differ enough to cost ~1% mask IoU);
* normalise with SAM's pixel mean/std, zero-pad bottom/right to 1024x1024;
* prompt coordinates scale per axis by new/old size;
* masks: 256x256 logits -> bilinear to 1024 -> crop to the resized input -> bilinear
  to the original size -> threshold. OpenCV's INTER_LINEAR uses the same half-pixel
  sampling as torch's ``interpolate(mode="bilinear", align_corners=False)``.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .geometry import IMAGE_SIZE, LOW_RES_SIZE

#: SAM's normalisation (RGB); model.json records the same values
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)
PIXEL_STD_RGB = (58.395, 57.12, 57.375)
PIXEL_MEAN = np.array(PIXEL_MEAN_RGB, np.float32)
PIXEL_STD = np.array(PIXEL_STD_RGB, np.float32)


#: Pillow modes of grey images deeper than 8 bits (16-bit PNG, 32-bit int / float TIFF)
_DEEP_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def read_rgb(path) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB, upright per its EXIF orientation (Pillow's
    errors pass through).

    Deeper-than-8-bit grey (a 16-bit PNG from a depth or thermal camera) is scaled
    from the image's min..max to 0..255, exactly as the node scales ``mono16`` frames
    and 16-bit compressed PNGs (``live.frames.scale_to_uint8``): one reader, one
    behaviour. (Pillow's ``convert("RGB")`` clips such images to 255: all white.)
    """
    from PIL import ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in _DEEP_GREY_MODES:
            from .live.frames import scale_to_uint8

            grey = scale_to_uint8(np.asarray(img))
            return np.repeat(grey[:, :, None], 3, axis=2)
        return np.asarray(img.convert("RGB"))


def preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """Size (h, w) of an image resized so its longest side is ``long_side``."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int = IMAGE_SIZE) -> np.ndarray:
    """HxWx3 uint8 RGB -> resized uint8 RGB, exactly as the reference does it."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    new_h, new_w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    if (new_h, new_w) == image.shape[:2]:
        return image
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    return np.asarray(resized)


class ImagePreprocessor:
    """Normalise and pad into one buffer allocated at start-up, not per frame."""

    def __init__(self, long_side: int = IMAGE_SIZE) -> None:
        self.long_side = long_side
        self._buffer = np.zeros((1, 3, long_side, long_side), np.float32)
        self._scale = (1.0 / PIXEL_STD).reshape(3, 1, 1)
        self._offset = (-PIXEL_MEAN / PIXEL_STD).reshape(3, 1, 1)

    def __call__(self, resized: np.ndarray) -> np.ndarray:
        """Resized uint8 RGB (h, w, 3), h, w <= long_side -> (1, 3, S, S) float32.

        The returned array is the preprocessor's own buffer: it is overwritten by the
        next call, so engines must consume it before then (they all copy it in).
        """
        h, w = resized.shape[:2]
        if h > self.long_side or w > self.long_side:
            raise ValueError(f"image {h}x{w} is larger than {self.long_side}")
        out = self._buffer[0]
        chw = resized.transpose(2, 0, 1)
        np.multiply(chw, self._scale, out=out[:, :h, :w], casting="unsafe")
        out[:, :h, :w] += self._offset
        # only the padding that this frame does not overwrite needs clearing
        out[:, h:, :] = 0.0
        out[:, :h, w:] = 0.0
        return self._buffer


def apply_coords(coords: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """(..., 2) x, y in original pixels -> model-input frame (float32 copy)."""
    coords = np.asarray(coords, np.float32).copy()
    old_h, old_w = original_size
    new_h, new_w = input_size
    coords[..., 0] *= new_w / old_w
    coords[..., 1] *= new_h / old_h
    return coords


def apply_boxes(boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """(B, 4) x0, y0, x1, y1 in original pixels -> (B, 2, 2) corner points, model frame."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 2, 2)
    return apply_coords(boxes, original_size, input_size)


def upscale_logits(
    low_res: np.ndarray,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """(256, 256) logits -> (H, W) logits at the original image size.

    Two bilinear steps as the reference: 256 -> 1024, crop to the resized input,
    -> original size. ``out`` (H, W) and ``scratch`` (1024, 1024) float32 buffers, when
    given, are written instead of fresh arrays (callers that upsample many masks).
    """
    h_in, w_in = input_size
    full = cv2.resize(low_res, (IMAGE_SIZE, IMAGE_SIZE), dst=scratch, interpolation=cv2.INTER_LINEAR)
    cropped = full[:h_in, :w_in]
    height, width = original_size
    if (h_in, w_in) == (height, width):
        if out is not None:
            out[...] = cropped
            return out
        return cropped.copy() if scratch is not None else np.ascontiguousarray(cropped)
    return cv2.resize(cropped, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)


def logits_to_masks(
    low_res: np.ndarray,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    threshold: float = 0.0,
) -> np.ndarray:
    """(..., 256, 256) logits -> (..., H, W) bool masks at the original size."""
    lead = low_res.shape[:-2]
    flat = low_res.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE)
    masks = np.empty((flat.shape[0], *original_size), bool)
    scratch = np.empty(original_size, np.float32)
    for i, logits in enumerate(flat):
        np.greater(upscale_logits(logits, original_size, input_size, out=scratch), threshold, out=masks[i])
    return masks.reshape(*lead, *original_size)
