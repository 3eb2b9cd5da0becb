"""``mobilesam-ros segment --depth``: each object's 3D from an aligned depth image
(:func:`mobilesam_ros.live.rgbd.objects_from_depth`), printed, saved (npz arrays and
a JSON file) and written on the overlay."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import CommandError
from ..live.rgbd import DepthError, fit_masks_to_depth, intrinsics_matrix, objects_from_depth
from ._common import parse_floats


def add_depth_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("3D from a depth image aligned to IMAGE (same pixels)")
    g.add_argument("--depth", metavar="DEPTH",
                   help="depth image registered to IMAGE: 16-bit PNG/TIFF (millimetres, 0 = no data), or a "
                        "float32 TIFF / .npy (metres, NaN / 0 = no data); another size only at the same aspect ratio")
    g.add_argument("--intrinsics", metavar="FX,FY,CX,CY",
                   help="pinhole intrinsics of IMAGE in pixels (rectified image: distortion is not modelled)")
    g.add_argument("--depth-scale", type=float, metavar="S",
                   help="metres per depth unit (default 0.001 for integer depth, 1.0 for float depth)")
    g.add_argument("--save-json", metavar="OUT.json",
                   help="write each object's 3D as JSON (default with --save-npz: OUT_3d.json beside it)")


class DepthInput:
    """The depth image, intrinsics and scale given on the command line, checked against
    the colour image before the model is loaded."""

    def __init__(self, args: argparse.Namespace, image_shape: tuple[int, int]) -> None:
        if not args.intrinsics:
            raise CommandError("--depth needs --intrinsics FX,FY,CX,CY (the colour camera's, in pixels)")
        try:
            self.K = intrinsics_matrix(parse_floats(args.intrinsics, 4, "--intrinsics"))
        except DepthError as exc:
            raise CommandError(f"--intrinsics: {exc}") from exc
        self.path = args.depth
        self.depth = _read_depth(args.depth)
        integer = self.depth.dtype.kind in "ui"
        scale = args.depth_scale if args.depth_scale is not None else (0.001 if integer else 1.0)
        if not scale > 0:
            raise CommandError(f"--depth-scale must be > 0, got {scale:g}")
        self.scale = float(scale)
        self.options = {} if integer else {"float_scale": self.scale}
        self.image_shape = tuple(image_shape)
        try:  # another size is fine at the same aspect ratio; check now, not after the model ran
            fit_masks_to_depth(np.zeros((0, *self.image_shape), bool), self.K, self.depth.shape)
        except DepthError as exc:
            raise CommandError(f"{args.depth}: {exc}") from exc
        self.json_path = args.save_json or (str(Path(args.save_npz).with_suffix("")) + "_3d.json" if args.save_npz else None)

    @classmethod
    def from_args(cls, args: argparse.Namespace, image_shape: tuple[int, int]) -> "DepthInput | None":
        if args.depth:
            return cls(args, image_shape)
        given = [flag for flag, value in (("--intrinsics", args.intrinsics), ("--depth-scale", args.depth_scale),
                                          ("--save-json", args.save_json)) if value is not None]
        if given:
            raise CommandError(f"{', '.join(given)} given without --depth DEPTH")
        return None

    def measure(self, masks: np.ndarray):
        """(N, H, W) masks of the colour image -> Objects3D."""
        flat = np.asarray(masks, bool).reshape(-1, *self.image_shape)
        flat, K = fit_masks_to_depth(flat, self.K, self.depth.shape)
        return objects_from_depth(flat, self.depth, K, self.scale, **self.options)

    def report(self, objects, scores: np.ndarray) -> None:
        """Print one line per object (stdout) and write the JSON file when asked."""
        for i, obj in enumerate(objects):
            if obj is None:
                print(f"object {i + 1}: no 3D ({objects.reasons[i]})")
                continue
            x, y, z = obj.centroid
            sx, sy, sz = obj.size
            print(f"object {i + 1}: centroid ({x:.3f}, {y:.3f}, {z:.3f}) m, distance {obj.distance:.3f} m, "
                  f"box {sx:.3f} x {sy:.3f} x {sz:.3f} m, {obj.num_points} points, median depth {obj.median_depth:.3f} m")
        if self.json_path:
            K = self.K
            data = {
                "frame": "camera optical frame of the image: x right, y down, z forward; metres",
                "depth": str(self.path),
                "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]},
                "depth_scale": self.scale,
                "objects": [
                    {"index": i + 1, "score": round(float(np.ravel(scores)[i]), 5) if i < np.size(scores) else None,
                     **(obj.as_dict() if obj is not None else {"reason": objects.reasons[i]})}
                    for i, obj in enumerate(objects)
                ],
            }
            Path(self.json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.json_path).write_text(json.dumps(data, indent=2) + "\n")
            print(f"wrote {self.json_path}", file=sys.stderr)


def npz_arrays(objects) -> dict[str, Any]:
    """The objects' 3D as arrays for the npz (NaN / 0 where an object has no 3D)."""
    if objects is None:
        return {}
    n = len(objects)
    out = {name: np.full((n, 3), np.nan) for name in ("depth_centroid", "depth_box_center", "depth_box_size")}
    out["depth_num_points"] = np.zeros(n, np.int64)
    out["depth_median"] = np.full(n, np.nan)
    for i, obj in enumerate(objects):
        if obj is not None:
            out["depth_centroid"][i], out["depth_box_center"][i], out["depth_box_size"][i] = obj.centroid, obj.center, obj.size
            out["depth_num_points"][i], out["depth_median"][i] = obj.num_points, obj.median_depth
    return out


def _read_depth(path: str) -> np.ndarray:
    import cv2

    p = Path(path)
    if not p.is_file():
        raise CommandError(f"depth image not found: {p}")
    if p.suffix.lower() == ".npy":
        try:
            depth = np.load(p)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read depth {p}: {exc}") from exc
    else:
        depth = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise CommandError(f"cannot read depth image {p} (16-bit PNG / TIFF, float32 TIFF or .npy)")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise CommandError(f"depth {p} must be one channel, got shape {depth.shape} (a colourised depth image "
                           "has lost the distances: save the raw 16-bit depth)")
    if depth.dtype == np.uint8:
        raise CommandError(f"depth {p} is 8-bit: it cannot hold distances; use the raw 16-bit depth (millimetres)")
    if depth.dtype.kind not in "uif":
        raise CommandError(f"depth {p} has unsupported type {depth.dtype}")
    if depth.dtype.kind == "f" and depth.dtype != np.float32:
        depth = depth.astype(np.float32)
    return depth
