"""mobilesam-ros segment: prompted segmentation of one image."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..cli import CommandError
from ._common import add_model_arguments, load_image, open_runtime, parse_floats, read_boxes_json

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
    prompts.add_argument("--multimask", action="store_true", help="return SAM's 3 candidate masks (tokens 1..3)")
    out = parser.add_argument_group("output")
    out.add_argument("--save-npz", metavar="OUT.npz", help="write masks, iou_predictions, low_res_logits")
    out.add_argument("--overlay", metavar="OUT.png", help="draw the masks over the image")


def _read_mask_input(path: str) -> np.ndarray:
    try:
        mask = np.load(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read mask input {path}: {exc}") from exc
    if mask.size != 256 * 256:
        raise CommandError(f"mask input must be 256x256 low-res logits, {path} has shape {mask.shape}")
    return mask.reshape(256, 256).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    from ..predictor import Prompt, PromptError, SamPredictor, validate_prompt
    from ..visualize import draw_overlay

    if not args.save_npz and not args.overlay:
        raise CommandError("nothing to write: give --save-npz and/or --overlay")
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

    image = load_image(args.image)
    # check prompts against the image before paying for model load and encoding
    try:
        if boxes is not None:
            for b in boxes:
                validate_prompt(Prompt(box=b), image.shape[:2])
        else:
            validate_prompt(
                Prompt(
                    np.asarray([p[:2] for p in points], np.float32) if points else None,
                    np.asarray([p[2] for p in points], np.float32) if points else None,
                    box,
                ),
                image.shape[:2],
            )
    except PromptError as exc:
        raise CommandError(str(exc)) from exc
    runtime = open_runtime(args)
    if args.multimask and runtime.num_mask_outputs == 1:
        raise CommandError("this model was exported with --single-mask: --multimask needs a 4-output decoder export")
    predictor = SamPredictor(runtime)
    started = time.perf_counter()
    predictor.set_image(image)
    encoded = time.perf_counter()
    try:
        if boxes is not None:
            result = predictor.predict_boxes(boxes, multimask_output=args.multimask)
            masks = result.masks[:, 0] if result.masks.shape[1] == 1 else result.masks
        else:
            coords = np.asarray([p[:2] for p in points], np.float32) if points else None
            labels = np.asarray([p[2] for p in points], np.float32) if points else None
            result = predictor.predict(coords, labels, box, mask_input, multimask_output=args.multimask)
            masks = result.masks
    except PromptError as exc:
        raise CommandError(str(exc)) from exc
    decoded = time.perf_counter()
    print(
        f"{runtime.describe()}: encoder {1000 * (encoded - started):.0f} ms, "
        f"decoder + masks {1000 * (decoded - encoded):.0f} ms, {int(np.prod(masks.shape[:-2]))} mask(s)",
        file=sys.stderr,
    )
    if args.save_npz:
        Path(args.save_npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            args.save_npz,
            masks=masks,
            iou_predictions=result.iou_predictions,
            low_res_logits=result.low_res_logits,
        )
        print(f"wrote {args.save_npz}", file=sys.stderr)
    if args.overlay:
        from PIL import Image

        flat = masks.reshape(-1, *masks.shape[-2:])
        overlay = draw_overlay(
            image,
            flat,
            scores=result.iou_predictions.reshape(-1),
            points=np.asarray([p[:2] for p in points]) if points else None,
            point_labels=np.asarray([p[2] for p in points]) if points else None,
            boxes=boxes if boxes is not None else box,
        )
        Path(args.overlay).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay).save(args.overlay)
        print(f"wrote {args.overlay}", file=sys.stderr)
    runtime.close()
    return 0
