"""A COCO instance-segmentation dataset from segmented frames.

Layout (what labelling and training tools load)::

    DIR/annotations.json    images, annotations (compressed RLE), categories
    DIR/images/000000.png   the frames: raw frames as PNG (lossless), compressed
                            frames as their original JPEG / PNG bytes (no re-encoding)

Categories come from the prompts' class ids: a class id that is an integer keeps
its value as the category id (a detector's class index stays the same across
bags); any other name gets the next free id; objects without a class id are
"object". Each annotation carries ``score`` (the predicted IoU), ``track_id``
(the object's identity across frames when known, else null) and the frame's ROS
stamp is on its image. The JSON is written when the writer closes, also after an
interruption, holding the frames done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..everything.masks import mask_to_coco_rle

UNNAMED = "object"


class CocoWriter:
    def __init__(self, directory: str | Path, every: int = 1, overwrite: bool = False, source: str = "") -> None:
        self.dir = Path(directory)
        if every < 1:
            raise ValueError(f"--every must be >= 1, got {every}")
        self.every = every
        annotations = self.dir / "annotations.json"
        if annotations.exists() and not overwrite:
            raise FileExistsError(f"{annotations} exists: choose another --coco directory or pass --overwrite")
        (self.dir / "images").mkdir(parents=True, exist_ok=True)
        self.source = source
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._class_ids: list[str] = []  # per annotation, mapped to categories on close
        self._seen = 0

    def wants(self) -> bool:
        """Whether the next segmented frame goes into the dataset (every Nth)."""
        take = self._seen % self.every == 0
        self._seen += 1
        return take

    def add(
        self,
        image: np.ndarray,
        masks: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: Sequence[str],
        track_ids: Sequence[Any] | None,
        stamp: tuple[int, int] | None,
        encoded: tuple[bytes, str] | None = None,
    ) -> None:
        """One frame: ``image`` RGB (H, W, 3), ``masks`` (K, H, W) bool, ``boxes`` (K, 4)
        x0, y0, x1, y1 with exclusive x1/y1. ``encoded`` (bytes, ".jpg"/".png") are the
        frame's original compressed bytes, written as they are."""
        image_id = len(self.images) + 1
        if encoded is not None:
            data, suffix = encoded
            name = f"{image_id - 1:06d}{suffix}"
            (self.dir / "images" / name).write_bytes(bytes(data))
        else:
            name = f"{image_id - 1:06d}.png"
            # level 1: ~3x faster than the default for a little more disk
            if not cv2.imwrite(str(self.dir / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise OSError(f"cannot write {self.dir / 'images' / name}")
        h, w = image.shape[:2]
        entry: dict[str, Any] = {"id": image_id, "file_name": f"images/{name}", "height": int(h), "width": int(w)}
        if stamp is not None:
            entry["ros_stamp"] = {"sec": int(stamp[0]), "nanosec": int(stamp[1])}
        self.images.append(entry)
        for k in range(len(masks)):
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            self.annotations.append({
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": None,
                "segmentation": mask_to_coco_rle(masks[k]),
                "area": int(np.count_nonzero(masks[k])),
                "bbox": [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)],
                "iscrowd": 0,
                "score": float(scores[k]),
                "track_id": None if track_ids is None or k >= len(track_ids) else track_ids[k],
            })
            self._class_ids.append(class_ids[k] if k < len(class_ids) else "")

    def categories(self) -> dict[str, int]:
        """Class id -> category id (see the module docstring)."""
        names = list(dict.fromkeys(c or UNNAMED for c in self._class_ids))
        numeric = {n: int(n) for n in names if n.lstrip("-").isdigit() and int(n) >= 0}
        mapping = dict(numeric)
        next_id = max(numeric.values(), default=0) + 1
        for name in names:
            if name not in mapping:
                mapping[name] = next_id
                next_id += 1
        return mapping

    def close(self) -> Path:
        mapping = self.categories()
        for ann, class_id in zip(self.annotations, self._class_ids):
            ann["category_id"] = mapping[class_id or UNNAMED]
        document = {
            "info": {"description": f"mobilesam-ros bag {self.source}".strip(), "every": self.every},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in sorted(mapping.items(), key=lambda x: x[1])],
        }
        path = self.dir / "annotations.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, path)  # never a half-written file
        return path
