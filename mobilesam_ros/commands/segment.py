"""mobilesam-ros segment: prompted segmentation of one image."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..arguments import add_model_arguments, open_runtime
from ..cli import CommandError
from ._common import load_image, parse_floats, read_boxes_json
from ._npz import COMPRESS_HELP, StreamedArray, write_npz
from ._outputs import check_output, write_image
from ._segment_depth import DepthInput, add_depth_arguments, npz_arrays

HELP = "segment one image from point and box prompts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="input image (jpg, png, ...)")
    add_model_arguments(parser)
    prompts = parser.add_argument_group("prompts (original image pixels, x right, y down)")
    prompts.add_argument("--point", action="append", default=[], metavar="X,Y,LABEL",
                         help="a point; LABEL 1 foreground, 0 background (repeat for several)")
    prompts.add_argument("--box", metavar="X0,Y0,X1,Y1", help="one box around the object")
    prompts.add_argument("--boxes-json", metavar="FILE",
                         help="a JSON list of [x0, y0, x1, y1] (or {\"boxes\": [...]}): one object per box, decoded in one batch")
    prompts.add_argument("--mask-input", metavar="NPY", help="previous low-res logits (256x256 .npy) to refine")
    prompts.add_argument("--multimask", action="store_true",
                         help="return SAM's 3 candidate masks (tokens 1..3); a TinySAM model always returns its 3")
    out = parser.add_argument_group("output")
    out.add_argument("--save-npz", metavar="OUT.npz", help="write masks, iou_predictions, low_res_logits")
    out.add_argument("--compress", action="store_true", help=COMPRESS_HELP)
    out.add_argument("--overlay", metavar="OUT.png", help="draw the masks over the image")
    add_depth_arguments(parser)


def _read_mask_input(path: str) -> np.ndarray:
    try:
        mask = np.load(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read mask input {path}: {exc}") from exc
    if mask.size != 256 * 256:
        raise CommandError(f"mask input must be 256x256 low-res logits, {path} has shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.number) or np.iscomplexobj(mask):
        raise CommandError(f"mask input must hold real numbers (logits), {path} has dtype {mask.dtype}")
    mask = mask.reshape(256, 256).astype(np.float32)
    if not np.isfinite(mask).all():
        raise CommandError(f"mask input {path} holds {int((~np.isfinite(mask)).sum())} NaN/inf value(s): "
                           "logits must be finite")
    return mask


@dataclass
class _Prompts:
    """The command's prompts, parsed: points (x, y, label), one box, or many boxes."""

    points: list[tuple[float, ...]]
    box: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None

    def single(self):
        """The points and box as one predictor ``Prompt``."""
        from ..predictor import Prompt

        coords, labels = self.point_arrays()
        return Prompt(coords, labels, self.box)

    def point_arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.points:
            return None, None
        return (np.asarray([p[:2] for p in self.points], np.float32),
                np.asarray([p[2] for p in self.points], np.float32))


def _parse_prompts(args: argparse.Namespace) -> _Prompts:
    """Prompts from the arguments; every usage error here, before any file is read."""
    points = [parse_floats(p, 3, "--point") for p in args.point]
    box = np.asarray(parse_floats(args.box, 4, "--box"), np.float32) if args.box else None
    boxes = read_boxes_json(args.boxes_json) if args.boxes_json else None
    if boxes is not None and len(boxes) == 0:
        raise CommandError(f"{args.boxes_json} holds no boxes")
    if boxes is not None and (points or box is not None or args.mask_input):
        raise CommandError("--boxes-json segments one object per box; it does not combine with --point, --box or --mask-input")
    if not points and box is None and boxes is None:
        raise CommandError("no prompt: give --point, --box or --boxes-json")
    for x, y, label in points:
        if label not in (0, 1):
            raise CommandError(f"point label must be 1 (foreground) or 0 (background), got {label:g}")
    mask_input = _read_mask_input(args.mask_input) if args.mask_input else None
    return _Prompts(points, box, boxes, mask_input)


def _check_prompts(prompts: _Prompts, image_size: tuple[int, int]) -> None:
    """Prompts against the image, before the model's result is waited for."""
    from ..predictor import Prompt, PromptError, validate_prompt

    try:
        if prompts.boxes is not None:
            for b in prompts.boxes:
                validate_prompt(Prompt(box=b), image_size)
        else:
            validate_prompt(prompts.single(), image_size)
    except PromptError as exc:
        raise CommandError(str(exc)) from exc


def _open_runtime_while(args: argparse.Namespace, work):
    """``work()``'s result and the runtime, the runtime opened meanwhile in a helper thread.

    Opening (imports, two ONNX Runtime sessions) is mostly single-threaded, and so is
    reading and checking the image: on 2 cores they overlap instead of adding up. An
    error of ``work`` wins (a bad prompt is reported as before, not a model error);
    a runtime opened for nothing is closed.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-runtime") as pool:
        opening = pool.submit(open_runtime, args)
        try:
            result = work()
        except BaseException:
            with contextlib.suppress(Exception):  # its own error is moot now
                opening.result().close()
            raise
        return result, opening.result()


def _predict(predictor, prompts: _Prompts, image_shape: tuple[int, int], multimask: bool, stream: bool):
    """(Prediction, masks): masks an array, or with ``stream`` a ``StreamedArray`` made
    chunk by chunk while the .npz is written (100 masks of a 2048x1365 photo are 280 MB
    of fresh pages, which cost more than the masks' arithmetic on our VMs)."""
    from ..predictor import PromptError

    try:
        if prompts.boxes is None:
            coords, labels = prompts.point_arrays()
            result = predictor.predict(coords, labels, prompts.box, prompts.mask_input, multimask_output=multimask)
            return result, result.masks
        result = predictor.predict_boxes(prompts.boxes, multimask_output=multimask, full_masks=not stream)
    except PromptError as exc:
        raise CommandError(str(exc)) from exc
    per_box = result.low_res_logits.shape[1]
    masks_shape = (len(prompts.boxes), *((per_box,) if per_box > 1 else ()), *image_shape)
    if not stream:
        return result, result.masks.reshape(masks_shape)
    post, logits = predictor.postprocessor(), result.low_res_logits  # (B, M, 256, 256)

    def fill(start: int, out: np.ndarray) -> None:  # out: masks of boxes start .. start + len(out)
        post.masks_into(logits[start : start + len(out)].reshape(-1, *logits.shape[-2:]),
                        out.reshape(-1, *image_shape))

    return result, StreamedArray(masks_shape, np.dtype(bool), fill)


def _write_overlay(path, image: np.ndarray, predictor, result, prompts: _Prompts, depth) -> None:
    from ..live.rgbd import draw_distances
    from ..visualize import draw_overlay, mask_boxes

    # TinySAM: one mask per object, the best-scored of its three (as its demos show)
    shown = result.best() if predictor.always_three_masks else result
    flat = shown.masks.reshape(-1, *shown.masks.shape[-2:])
    coords, labels = prompts.point_arrays()
    overlay = draw_overlay(image, flat, scores=shown.iou_predictions.reshape(-1), points=coords,
                           point_labels=labels, boxes=prompts.boxes if prompts.boxes is not None else prompts.box)
    if depth is not None:  # each shown object's distance under its score
        draw_distances(overlay, mask_boxes(flat), depth.measure(flat))
    write_image(path, overlay)
    print(f"wrote {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..predictor import SamPredictor
    from ..variants import model_name

    if not args.save_npz and not args.overlay and not args.depth:
        raise CommandError("nothing to write: give --save-npz and/or --overlay (or --depth to print 3D)")
    # outputs first: an unwritable path fails now, not after the model ran
    overlay_path = check_output(args.overlay, "--overlay", image=True) if args.overlay else None
    if args.save_npz:
        check_output(args.save_npz, "--save-npz")
    prompts = _parse_prompts(args)

    def read_inputs():
        image = load_image(args.image)
        depth = DepthInput.from_args(args, image.shape[:2])  # None without --depth
        _check_prompts(prompts, image.shape[:2])
        return image, depth

    (image, depth), runtime = _open_runtime_while(args, read_inputs)
    if args.multimask and runtime.num_mask_outputs == 1:
        runtime.close()
        raise CommandError("this model was exported with --single-mask: --multimask needs a 4-output decoder export")
    predictor = SamPredictor(runtime)
    started = time.perf_counter()
    predictor.set_image(image)
    encoded = time.perf_counter()
    stream = prompts.boxes is not None and not args.overlay and depth is None
    result, masks = _predict(predictor, prompts, image.shape[:2], args.multimask, stream)
    decoded = time.perf_counter()
    print(
        f"{model_name(runtime.variant, runtime.prompt_decoder)}, {runtime.describe()}: "
        f"encoder {1000 * (encoded - started):.0f} ms, "
        f"decoder {'(masks made while writing)' if stream else '+ masks'} {1000 * (decoded - encoded):.0f} ms, "
        f"{int(np.prod(masks.shape[:-2]))} mask(s)",
        file=sys.stderr,
    )
    objects3d = depth.measure(masks) if depth is not None else None
    if objects3d is not None:
        depth.report(objects3d, result.iou_predictions)
    if args.save_npz:
        write_npz(args.save_npz, dict(
            masks=masks,
            iou_predictions=result.iou_predictions,
            low_res_logits=result.low_res_logits,
            **npz_arrays(objects3d),
        ), compress=args.compress)
        print(f"wrote {args.save_npz}" + (f" ({1000 * (time.perf_counter() - decoded):.0f} ms with the masks)"
                                          if stream else ""), file=sys.stderr)
    if args.overlay:
        _write_overlay(overlay_path, image, predictor, result, prompts, depth)
    runtime.close()
    return 0
