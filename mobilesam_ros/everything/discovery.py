"""Object discovery for segment-everything: a YOLOv8-layout detector run with ONNX Runtime.

MobileSAMv2 replaces SAM's 32x32 point grid with the boxes of an "object-aware"
detector (an ultralytics YOLOv8 model, ``ObjectAwareModel.pt``). Any detector
exported to ONNX in the YOLOv8 layout works here:

* input ``1 x 3 x S x S`` (or ``S_h x S_w``) RGB scaled to 0..1, letterboxed:
  aspect kept, gray 114 padding, image centred;
* first output ``[1, 4 + nc (+ nm mask coefficients), N]``: ``cx, cy, w, h`` in
  input pixels, then ``nc`` class scores (already sigmoid), then optional mask
  coefficients. A second output (mask prototypes of a -seg model) is ignored. An
  output stored transposed (``[1, N, 4 + nc ...]``) is recognised by its shape.

Post-processing reproduces ultralytics' ``non_max_suppression`` as MobileSAMv2
calls it: per anchor the best class score, ``score > conf``, class-agnostic NMS
(IoU > ``iou`` suppressed), at most ``max_det`` boxes; then boxes go back to
original pixels and a box edge within ``border_snap`` pixels of the image border
is moved onto it.

Only numpy, OpenCV and onnxruntime: no torch on this path.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .masks import box_nms

LETTERBOX_FILL = 114
#: ultralytics' cap on boxes entering NMS
MAX_NMS = 30000


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed in the network input: ``input = original * gain + pad``."""

    gain: float
    pad_x: int  # left padding, input pixels
    pad_y: int  # top padding, input pixels
    new_size: tuple[int, int]  # (h, w) of the resized image inside the input
    input_size: tuple[int, int]  # (h, w) of the network input
    original_size: tuple[int, int]  # (h, w) of the original image


@dataclass
class Detections:
    """Boxes found in one image, x0, y0, x1, y1 in original pixels, best first."""

    boxes: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64
    num_candidates: int = 0  # anchors above the confidence threshold before NMS

    def __len__(self) -> int:
        return len(self.boxes)


def letterbox(image: np.ndarray, input_size: tuple[int, int] | int) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 RGB -> (1, 3, S_h, S_w) float32 0..1 and the transform used.

    As ultralytics' ``LetterBox`` (auto=False, scaleup=True): gain
    ``min(S_h / h, S_w / w)``, new size ``round(w * gain), round(h * gain)`` with
    OpenCV's bilinear resize, the padding split with ``round(d / 2 - 0.1)`` on the
    top/left and the rest on the bottom/right, filled with 114.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    in_h, in_w = input_size
    h, w = image.shape[:2]
    gain = min(in_h / h, in_w / w)
    new_w, new_h = int(round(w * gain)), int(round(h * gain))
    dw, dh = (in_w - new_w) / 2, (in_h - new_h) / 2
    left, top = int(round(dw - 0.1)), int(round(dh - 0.1))
    if (new_h, new_w) != (h, w):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    else:
        resized = image
    canvas = np.full((in_h, in_w, 3), LETTERBOX_FILL, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1.0 / 255.0)
    return tensor, Letterbox(gain, left, top, (new_h, new_w), (in_h, in_w), (h, w))


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32)
    out = np.empty_like(boxes)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    out[:, 0] = boxes[:, 0] - half_w
    out[:, 1] = boxes[:, 1] - half_h
    out[:, 2] = boxes[:, 0] + half_w
    out[:, 3] = boxes[:, 1] + half_h
    return out


def decode_yolo(
    output: np.ndarray,
    num_classes: int,
    conf: float = 0.4,
    iou: float = 0.9,
    max_det: int = 300,
    max_nms: int = MAX_NMS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One image's raw head ``(4 + nc + nm, N)`` -> boxes xyxy (input pixels), scores,
    class ids, and the number of candidates above ``conf``; best first.

    ultralytics' ``non_max_suppression`` with ``agnostic=True``: score = best class
    score, keep ``score > conf``, at most ``max_nms`` by score into NMS, greedy NMS
    dropping IoU > ``iou``, then the first ``max_det``.
    """
    output = np.asarray(output, np.float32)
    if output.ndim != 2 or num_classes < 1 or output.shape[0] < 4 + num_classes:
        raise ValueError(f"head output {output.shape} cannot hold 4 box values and {num_classes} class scores")
    class_scores = output[4 : 4 + num_classes]
    scores = class_scores.max(axis=0)
    candidates = np.flatnonzero(scores > conf)
    num_candidates = len(candidates)
    if num_candidates == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0
    scores = scores[candidates]
    order = np.argsort(-scores, kind="stable")[:max_nms]
    candidates, scores = candidates[order], scores[order]
    classes = class_scores[:, candidates].argmax(axis=0).astype(np.int64)
    boxes = xywh_to_xyxy(output[:4, candidates].T)
    keep = box_nms(boxes, scores, iou)[:max_det]
    return boxes[keep], scores[keep], classes[keep], num_candidates


def boxes_to_original(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Input-pixel xyxy -> original-pixel xyxy (remove padding, divide by gain, clip)."""
    out = np.asarray(boxes, np.float32).copy()
    out[:, [0, 2]] -= lb.pad_x
    out[:, [1, 3]] -= lb.pad_y
    out /= np.float32(lb.gain)
    h, w = lb.original_size
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def snap_to_border(boxes: np.ndarray, image_size: tuple[int, int], threshold: float) -> np.ndarray:
    """Move box edges within ``threshold`` pixels of the image border onto it
    (MobileSAMv2's ``adjust_bboxes_to_image_border``: x0 < t -> 0, y0 < t -> 0,
    x1 > w - t -> w, y1 > h - t -> h)."""
    out = np.asarray(boxes, np.float32).copy()
    if threshold <= 0 or len(out) == 0:
        return out
    h, w = image_size
    out[:, 0] = np.where(out[:, 0] < threshold, 0.0, out[:, 0])
    out[:, 1] = np.where(out[:, 1] < threshold, 0.0, out[:, 1])
    out[:, 2] = np.where(out[:, 2] > w - threshold, float(w), out[:, 2])
    out[:, 3] = np.where(out[:, 3] > h - threshold, float(h), out[:, 3])
    return out


def _names_from_metadata(metadata: dict[str, str]) -> dict | None:
    names = metadata.get("names")
    if not names:
        return None
    try:
        parsed = ast.literal_eval(names)
    except (ValueError, SyntaxError):
        return None
    if isinstance(parsed, dict):
        return parsed
    if isinstance(parsed, (list, tuple)):
        return dict(enumerate(parsed))
    return None


class ObjectDiscovery:
    """A YOLOv8-layout ONNX detector proposing the boxes that MobileSAMv2 segments.

    ``detect(image)`` -> :class:`Detections` in original pixels. Defaults are
    MobileSAMv2's: input 1024, conf 0.4, NMS IoU 0.9, 300 boxes, 20 px border snap.

    The border snap threshold is in network-input pixels, measured from the edge of
    the image inside the letterbox (so ``border_snap / gain`` original pixels).
    MobileSAMv2 measured it from the edge of its stride-padded input, which differs
    from this by at most that padding (< 32 input pixels, top/left split).
    """

    def __init__(
        self,
        model_path: str | Path,
        conf: float = 0.4,
        iou: float = 0.9,
        max_det: int = 300,
        imgsz: int | None = None,
        border_snap: float = 20.0,
        num_classes: int | None = None,
        providers: list[str] | None = None,
        num_threads: int = 0,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"detector not found: {path}. Export MobileSAMv2's ObjectAwareModel.pt (or any YOLOv8 "
                "detector) with ultralytics: YOLO('ObjectAwareModel.pt').export(format='onnx', imgsz=1024)"
            )
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.path = path
        self.conf, self.iou, self.max_det, self.border_snap = float(conf), float(iou), int(max_det), float(border_snap)

        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{path}: expected one 1x3xSxS image input, got {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        dims = inputs[0].shape[2:]
        static = [d if isinstance(d, int) and d > 0 else None for d in dims]
        if all(static):
            self.input_size = (static[0], static[1])
            if imgsz is not None and (imgsz, imgsz) != self.input_size:
                raise ValueError(
                    f"{path} was exported for {static[0]}x{static[1]} input, not imgsz {imgsz}: "
                    f"re-export with imgsz={imgsz} or leave imgsz unset"
                )
        else:
            size = int(imgsz or 1024)
            self.input_size = (size, size)

        outputs = self.session.get_outputs()
        head = [o for o in outputs if len(o.shape) == 3]
        if not head:
            raise ValueError(f"{path}: no [1, 4 + nc, N] output, got {[(o.name, o.shape) for o in outputs]}")
        self.output_name = head[0].name
        protos = [o for o in outputs if len(o.shape) == 4]
        self._mask_dim = protos[0].shape[1] if protos and isinstance(protos[0].shape[1], int) else (32 if protos else 0)
        metadata = self.session.get_modelmeta().custom_metadata_map or {}
        if "'nms': True" in metadata.get("args", "") or metadata.get("end2end", "").lower() == "true":
            raise ValueError(
                f"{path} was exported with NMS inside the graph (its output is already boxes): export it again "
                "without nms=True, e.g. YOLO('ObjectAwareModel.pt').export(format='onnx', imgsz=1024)"
            )
        self.names = _names_from_metadata(metadata)
        self._num_classes = num_classes

    def num_classes(self, channels: int) -> int:
        """Classes in a head with ``channels`` rows: given, from the ultralytics
        metadata (``names``), or ``channels - 4 - nm`` (nm = 32 with prototypes)."""
        if self._num_classes is not None:
            return self._num_classes
        if self.names:
            return len(self.names)
        return channels - 4 - self._mask_dim

    def describe(self) -> str:
        return (
            f"{self.path.name} ({self.input_size[1]}x{self.input_size[0]}, conf {self.conf}, "
            f"iou {self.iou}, max_det {self.max_det})"
        )

    def _head(self, tensor: np.ndarray) -> np.ndarray:
        (raw,) = self.session.run([self.output_name], {self.input_name: tensor})
        raw = np.asarray(raw, np.float32)
        if raw.ndim != 3 or raw.shape[0] != 1:
            raise ValueError(f"detector output has shape {raw.shape}, expected [1, 4 + nc, N]")
        head = raw[0]
        if head.shape[0] > head.shape[1]:  # [N, 4 + nc]: transposed export
            head = head.T
        return head

    def detect(self, image: np.ndarray) -> Detections:
        """HxWx3 uint8 RGB -> boxes in original pixels, best first."""
        tensor, lb = letterbox(image, self.input_size)
        head = self._head(tensor)
        boxes, scores, classes, n = decode_yolo(
            head, self.num_classes(head.shape[0]), self.conf, self.iou, self.max_det
        )
        boxes = boxes_to_original(boxes, lb)
        boxes = snap_to_border(boxes, lb.original_size, self.border_snap / lb.gain)
        return Detections(boxes, scores, classes, n)

    __call__ = detect
