"""Set an image once, decode any number of prompts against its cached embedding.

The predictor turns prompts (original-image pixels) into decoder inputs and
decoder outputs into masks; it knows nothing about which engine runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from .geometry import LOW_RES_SIZE
from .postprocess import MaskPostprocessor, get_postprocessor
from .runtime.base import Runtime, empty_mask_input
from .transforms import ImagePreprocessor, apply_coords, preprocess_shape, resize_longest_side
from .variants import DEFAULT_VARIANT, always_three_masks

# SAM's token order: 0 = single-mask output, 1..3 = multimask outputs
SINGLE_MASK_TOKENS = slice(0, 1)
MULTIMASK_TOKENS = slice(1, 4)


def output_tokens(variant: str, num_mask_outputs: int, multimask_output: bool) -> slice:
    """Which decoder outputs a prompt gets: THE place this is decided (the predictor,
    segment-everything, the live pipeline all ask here).

    MobileSAM (and MobileSAMv2's decoder): token 0, or tokens 1..3 when three
    candidates are asked for. TinySAM: tokens 1..3 for every prompt (its reference
    predictor has no single-mask path); callers that want one mask per object take
    the best-scored of them (``select_best``).
    """
    if num_mask_outputs == 1:
        if always_three_masks(variant):
            raise ValueError(f"a {variant} model needs the 4-output decoder (exported without --single-mask)")
        if multimask_output:
            raise ValueError("this model was exported with a single-mask decoder; multimask output is unavailable")
        return SINGLE_MASK_TOKENS
    if always_three_masks(variant):
        return MULTIMASK_TOKENS
    return MULTIMASK_TOKENS if multimask_output else SINGLE_MASK_TOKENS


def select_best(iou: np.ndarray, logits: np.ndarray, keepdims: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The best-scored output per prompt: iou (..., M), logits or masks (..., M, h, w)
    -> (...,), (..., h, w) (``keepdims``: M kept as 1). With M = 1 this is that output."""
    iou = np.asarray(iou)
    if iou.shape[-1] == 1:  # nothing to choose: views, no copy (a 320-box chunk is 84 MB of logits)
        return (iou, logits) if keepdims else (iou[..., 0], logits[..., 0, :, :])
    best = np.argmax(iou, axis=-1)[..., None]
    best_iou = np.take_along_axis(iou, best, axis=-1)
    best_maps = np.take_along_axis(logits, best[..., None, None], axis=-3)
    if keepdims:
        return best_iou, best_maps
    return best_iou[..., 0], best_maps[..., 0, :, :]

LABEL_PADDING, LABEL_BACKGROUND, LABEL_FOREGROUND, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class PromptError(ValueError):
    """A prompt that cannot be decoded (bad shape, NaN, outside the image)."""


@dataclass(frozen=True)
class ImageEmbedding:
    """An encoded frame: what every prompt on that frame is decoded against."""

    embedding: np.ndarray  # (1, 256, 64, 64) float32
    original_size: tuple[int, int]  # (h, w) of the frame
    input_size: tuple[int, int]  # (h, w) after resizing the longest side to 1024
    key: Hashable = None


@dataclass
class Prompt:
    """One object to segment, in original-image pixels (x, y).

    ``points`` (N, 2) with ``labels`` (N,) 1 foreground / 0 background, and/or a
    ``box`` (x0, y0, x1, y1); ``mask_input`` (256, 256) low-res logits from an
    earlier prediction refine the result.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None


@dataclass
class Prediction:
    masks: np.ndarray | None  # (M, H, W) bool, or (B, M, H, W) for a batch (None: not made)
    iou_predictions: np.ndarray  # (M,) or (B, M)
    low_res_logits: np.ndarray  # (M, 256, 256) or (B, M, 256, 256)
    extra: dict = field(default_factory=dict)

    def best(self) -> "Prediction":
        """One mask per object: the best-scored of its M outputs (M kept as 1, so the
        shapes are those of a single-mask prediction). TinySAM's demos do this."""
        iou, masks = select_best(self.iou_predictions, self.masks, keepdims=True)
        _, logits = select_best(self.iou_predictions, self.low_res_logits, keepdims=True)
        return Prediction(masks, iou, logits, dict(self.extra))


def validate_prompt(prompt: Prompt, original_size: tuple[int, int]) -> None:
    """Raise PromptError for a prompt the decoder cannot take."""
    height, width = original_size
    if prompt.points is None and prompt.box is None:
        raise PromptError("a prompt needs at least one point or a box")
    if prompt.points is not None:
        points = np.asarray(prompt.points, np.float64)
        labels = None if prompt.labels is None else np.asarray(prompt.labels)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise PromptError(f"points must be (N, 2), got shape {points.shape}")
        if labels is None or labels.shape != (len(points),):
            raise PromptError(f"need one label per point ({len(points)}), got {None if labels is None else labels.shape}")
        if not np.isin(labels, (LABEL_BACKGROUND, LABEL_FOREGROUND)).all():
            raise PromptError(f"point labels must be 1 (foreground) or 0 (background), got {labels.tolist()}")
        if not np.isfinite(points).all():
            raise PromptError("point coordinates must be finite")
        outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
        if outside.any():
            raise PromptError(f"point {points[outside][0].tolist()} is outside the {width}x{height} image")
    if prompt.box is not None:
        box = np.asarray(prompt.box, np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise PromptError(f"a box is 4 finite numbers x0, y0, x1, y1, got {box.tolist()}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise PromptError(f"box {box.tolist()} is empty: need x0 < x1 and y0 < y1")
        if box[2] < 0 or box[3] < 0 or box[0] > width or box[1] > height:
            raise PromptError(f"box {box.tolist()} lies outside the {width}x{height} image")
    if prompt.mask_input is not None and np.asarray(prompt.mask_input).size != LOW_RES_SIZE * LOW_RES_SIZE:
        raise PromptError(f"mask_input must be 256x256 low-res logits, got shape {np.shape(prompt.mask_input)}")


def prompt_points(prompt: Prompt, original_size, input_size) -> tuple[np.ndarray, np.ndarray]:
    """Decoder points for one prompt as the reference builds them: the points, then
    the box corners (labels 2, 3); one padding point when there is no box."""
    coords, labels = [], []
    if prompt.points is not None:
        coords.append(np.asarray(prompt.points, np.float32).reshape(-1, 2))
        labels.append(np.asarray(prompt.labels, np.float32).reshape(-1))
    if prompt.box is not None:
        coords.append(np.asarray(prompt.box, np.float32).reshape(2, 2))
        labels.append(np.array([LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], np.float32))
    coords_arr = apply_coords(np.concatenate(coords), original_size, input_size)
    labels_arr = np.concatenate(labels)
    if prompt.box is None:
        coords_arr = np.concatenate([coords_arr, np.zeros((1, 2), np.float32)])
        labels_arr = np.concatenate([labels_arr, np.array([LABEL_PADDING], np.float32)])
    return coords_arr, labels_arr


class SamPredictor:
    """Encode frames with a runtime, keep the last few embeddings, decode prompts."""

    def __init__(self, runtime: Runtime, mask_threshold: float = 0.0, cache_size: int = 4, max_batch: int = 64) -> None:
        self.runtime = runtime
        self.mask_threshold = mask_threshold
        self.max_batch = max_batch
        self._preprocess = ImagePreprocessor()
        self._cache: OrderedDict[Hashable, ImageEmbedding] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._current: ImageEmbedding | None = None
        self._no_mask, self._no_mask_flag = empty_mask_input()

    # --- images -------------------------------------------------------------------
    @property
    def current(self) -> ImageEmbedding | None:
        return self._current

    def set_image(self, image: np.ndarray, key: Hashable = None) -> ImageEmbedding:
        """HxWx3 uint8 RGB -> cached embedding (also the current one)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) == 0:
            raise ValueError(f"expected a non-empty HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        resized = resize_longest_side(image)
        return self.set_resized_image(resized, image.shape[:2], key)

    def set_resized_image(self, resized: np.ndarray, original_size: tuple[int, int], key: Hashable = None) -> ImageEmbedding:
        """Encode an image already resized to longest side 1024 (the reference's resize)."""
        expected = preprocess_shape(*original_size)
        if resized.shape[:2] != expected:
            raise ValueError(f"resized image is {resized.shape[:2]}, expected {expected} for {original_size}")
        embedding = self.runtime.encode(self._preprocess(resized))
        return self.set_embedding(embedding, original_size, key)

    def set_embedding(self, embedding: np.ndarray, original_size: tuple[int, int], key: Hashable = None) -> ImageEmbedding:
        """Use an embedding computed elsewhere (a stored one, another process's)."""
        entry = ImageEmbedding(
            np.ascontiguousarray(embedding, np.float32), tuple(original_size), preprocess_shape(*original_size), key
        )
        if key is not None:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._current = entry
        return entry

    def cached(self, key: Hashable) -> ImageEmbedding | None:
        return self._cache.get(key)

    def _embedding(self, embedding: ImageEmbedding | None) -> ImageEmbedding:
        embedding = embedding or self._current
        if embedding is None:
            raise RuntimeError("no image set: call set_image() before predicting")
        return embedding

    # --- decoding -------------------------------------------------------------------
    @property
    def variant(self) -> str:
        """The model's variant (``variants.VARIANTS``), from the runtime."""
        return getattr(self.runtime, "variant", DEFAULT_VARIANT)

    @property
    def always_three_masks(self) -> bool:
        """True when every prompt yields three masks whatever is asked (TinySAM)."""
        return always_three_masks(self.variant)

    def tokens(self, multimask_output: bool) -> slice:
        """The decoder outputs a prompt gets on this model (see ``output_tokens``)."""
        return output_tokens(self.variant, self.runtime.num_mask_outputs, multimask_output)

    def decode_low_res(
        self, prompts: Sequence[Prompt], multimask_output: bool = False, embedding: ImageEmbedding | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode many prompts in as few batched calls as possible.

        Returns iou (P, M) and low-res logits (P, M, 256, 256) in prompt order; M is 1
        or 3 as ``tokens`` decides (always 3 for TinySAM). Prompts
        are grouped by their number of decoder points, so no prompt gets extra padding
        tokens (which would change its result relative to the reference), and each
        group runs in chunks of at most ``max_batch``.
        """
        emb = self._embedding(embedding)
        tokens = self.tokens(multimask_output)
        num_masks = tokens.stop - tokens.start
        iou_out = np.empty((len(prompts), num_masks), np.float32)
        logits_out = np.empty((len(prompts), num_masks, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
        groups: dict[tuple[int, bool], list[int]] = {}
        built = []
        for i, prompt in enumerate(prompts):
            validate_prompt(prompt, emb.original_size)
            coords, labels = prompt_points(prompt, emb.original_size, emb.input_size)
            built.append((coords, labels))
            groups.setdefault((len(labels), prompt.mask_input is not None), []).append(i)
        for (_, has_mask), indices in groups.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                coords = np.stack([built[i][0] for i in chunk])
                labels = np.stack([built[i][1] for i in chunk])
                if has_mask:
                    mask_input = np.stack([np.asarray(prompts[i].mask_input, np.float32).reshape(1, LOW_RES_SIZE, LOW_RES_SIZE)
                                           for i in chunk])
                    has_mask_input = np.ones((len(chunk),), np.float32)
                else:
                    mask_input, has_mask_input = self._no_mask, self._no_mask_flag
                out = self.runtime.decode(emb.embedding, coords, labels, mask_input, has_mask_input)
                iou_out[chunk] = out.iou_predictions[:, tokens]
                logits_out[chunk] = out.low_res_masks[:, tokens]
        return iou_out, logits_out

    def decode_best(
        self, prompts: Sequence[Prompt], multimask_output: bool = False, embedding: ImageEmbedding | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One mask per prompt as the model's authors pick it: iou (P,), low-res logits
        (P, 256, 256). MobileSAM: token 0 (``multimask_output``: best of tokens 1..3);
        TinySAM: always the best-scored of tokens 1..3."""
        return select_best(*self.decode_low_res(prompts, multimask_output, embedding))

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        embedding: ImageEmbedding | None = None,
    ) -> Prediction:
        """One object: masks (M, H, W), iou (M,), low-res logits (M, 256, 256); M = 3
        for TinySAM whatever ``multimask_output`` says (``Prediction.best()`` picks one)."""
        emb = self._embedding(embedding)
        prompt = Prompt(point_coords, point_labels, box, mask_input)
        iou, logits = self.decode_low_res([prompt], multimask_output, emb)
        # threshold at low resolution, upsample only inside each mask's box (same masks
        # as transforms.logits_to_masks, the reference's two resizes)
        return Prediction(self.postprocessor(emb).masks(logits[0]), iou[0], logits[0])

    def predict_boxes(
        self, boxes: np.ndarray, multimask_output: bool = False, embedding: ImageEmbedding | None = None,
        full_masks: bool = True,
    ) -> Prediction:
        """A batch of boxes, one object each: masks (B, M, H, W), iou (B, M), logits (B, M, 256, 256).

        ``full_masks=False`` leaves ``masks`` None, for callers that make them chunk by
        chunk from the logits (``postprocessor(embedding).masks_into``)."""
        emb = self._embedding(embedding)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        iou, logits = self.decode_low_res([Prompt(box=b) for b in boxes], multimask_output, emb)
        return Prediction(self.postprocessor(emb).masks(logits) if full_masks else None, iou, logits)

    def postprocessor(self, embedding: ImageEmbedding | None = None) -> MaskPostprocessor:
        """What turns this frame's low-res logits into full-size masks (cached per size)."""
        emb = self._embedding(embedding)
        return get_postprocessor(emb.original_size, emb.input_size, self.mask_threshold)
