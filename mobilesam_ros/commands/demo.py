"""mobilesam-ros demo: the ROS 2 node end to end on this machine, no ROS install needed
(the ROS 2 pip wheels are enough).

Starts ``segment_node`` in its own process, streams images to it at camera rate
(a synthetic moving scene, a folder of images or a video), prompts one object, and
writes the node's overlays (masks, outlines, prompts, track ids, scores) to a folder.

On the synthetic scene the demo clicks the moving disk once, on a frame the node has
already encoded and stamped with that frame, so the click is on the disk in the frame
it is decoded on; the node's tracking then follows the disk with one id. The scene is
paced by the node: it moves on by ``SCENE_STEP_PX`` (the disk's largest step) per frame
the node has answered, so what the overlays show is followable on any machine (on a
CPU the node processes a frame in seconds; at camera pace the disk would jump by its
own size between processed frames). The demo scores the following from ``~/labels``
(on every frame the node processed after the click: is the clicked object's id on the
disk, the IoU of its mask with the disk, 0 when it is not there) and writes it to
``summary.json``.

This module is ROS-free (sources, scene, scoring, summary: :class:`DemoRecord`); the
streaming over DDS is :mod:`mobilesam_ros.ros.demo_stream`, imported when the demo runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..arguments import float_in, frame_size
from ..cli import CommandError

HELP = "run the ROS 2 node on a synthetic scene, images or a video and save its overlays"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NAMESPACE = "/demo"
#: the synthetic scene moves on by this much (the disk's largest step, in pixels) per
#: frame the node has answered
SCENE_STEP_PX = 12.0
REPO = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="stream the images of a folder (sorted, looped)")
    source.add_argument("--video", metavar="FILE", help="stream a video file (looped)")
    parser.add_argument("--model", metavar="PATH",
                        help="checkpoint or exported model directory (default: what models/ holds, else the "
                             "toy-world model, trained on synthetic shapes)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    parser.add_argument("--fps", type=float_in(0.1, 120), default=10.0, help="camera rate (default 10)")
    parser.add_argument("--duration", type=float_in(0.1), default=20.0, help="seconds of streaming (default 20)")
    parser.add_argument("--size", type=frame_size, default="640x480", metavar="WxH",
                        help="synthetic scene size (default 640x480)")
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="where overlays go (default out/demo)")
    parser.add_argument("--mode", default="prompt", choices=("prompt", "everything"),
                        help="everything: segment every object (grid strategy, 8 points per side, the model's "
                             "recorded thresholds: the toy-world model's own); on the synthetic scene summary.json "
                             "says in how many processed frames a mask found the disk, the square and the triangle")


# --- model ---------------------------------------------------------------------------------------
def _model_dirs() -> list[Path]:
    dirs = [Path.cwd() / "models", REPO / "models"]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [x.resolve() for x in dirs[:i]]]


def choose_model(model: str | None, backend: str, out: Path) -> tuple[str, str, str]:
    """(model path, backend, what it is): the given model; else real weights from
    models/ (an exported directory for ONNX Runtime first, else a checkpoint); else the
    toy-world model (masks that follow the demo's shapes), written to ``out``; else (a
    build without its tensors) a random-weight checkpoint."""
    if model:
        if not Path(model).exists():
            raise CommandError(f"model not found: {model}")
        return model, backend, f"your model {model}"
    have_ort = importlib.util.find_spec("onnxruntime") is not None
    for folder in _model_dirs():
        if have_ort and backend in ("auto", "onnxruntime"):
            for exported in sorted(folder.iterdir()):
                if exported.is_dir() and (exported / "model.json").is_file():
                    return str(exported), "onnxruntime", f"real weights: exported model {exported} (ONNX Runtime)"
        checkpoints = sorted(folder.glob("mobile_sam.pt")) + sorted(
            p for p in list(folder.glob("*.pt")) + list(folder.glob("*.pth")) if p.name != "mobile_sam.pt"
        )
        if checkpoints:
            return str(checkpoints[0]), "torch", f"real weights: checkpoint {checkpoints[0]} (PyTorch)"
    if importlib.util.find_spec("torch") is None:
        raise CommandError(
            "no model in models/ and PyTorch is not installed for a synthetic one: run 'mobilesam-ros download' "
            "or install the export extra (pip install 'mobilesam_ros[export]')"
        )
    from ..toy.model import SHIPPED, TOY_NOTICE, write_toy_checkpoint

    if SHIPPED.is_file():
        path = out / "toy_world.pt"
        if not path.is_file() or path.stat().st_mtime < SHIPPED.stat().st_mtime:
            write_toy_checkpoint(path)
        return str(path), "torch", (
            f"the TOY-WORLD model {path} ({TOY_NOTICE}); "
            "get the official weights with 'mobilesam-ros download'"
        )
    from ..modeling import write_synthetic_checkpoint

    path = out / "synthetic_mobile_sam.pt"
    if not path.is_file():
        write_synthetic_checkpoint(path, seed=0)
    return str(path), "torch", (
        f"a SYNTHETIC checkpoint {path} (random weights: the pipeline is real, the masks are meaningless; "
        "get the official weights with 'mobilesam-ros download')"
    )


# --- sources --------------------------------------------------------------------------------------
class SyntheticScene:
    """A textured background with a disk moving left-right, a square moving up-down
    and a static triangle. ``target(i)`` is the disk's centre (where prompts go)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([60 + 40 * yy / height, 90 + 30 * xx / width, 120 - 40 * yy / height], axis=-1)
        noise = np.random.default_rng(0).normal(0, 6, (height, width, 1)).astype(np.float32)
        self.background = np.clip(base + noise, 0, 255).astype(np.uint8)
        self.radius = max(8, min(width, height) // 8)
        #: scene time per processed frame: the disk (at most 0.3 * width / 30 px per unit of
        #: time) moves at most SCENE_STEP_PX between two frames the node processes
        self.step = SCENE_STEP_PX / (0.3 * width / 30.0)

    def target(self, i: float) -> tuple[float, float]:
        t = i / 30.0
        x = self.width * (0.5 + 0.3 * np.sin(t))
        return float(x), float(self.height * 0.35)

    def disk(self, i: int) -> np.ndarray:
        """(H, W) bool: the disk of frame ``i`` (as drawn, without its anti-aliased rim)."""
        import cv2

        mask = np.zeros((self.height, self.width), np.uint8)
        cx, cy = self.target(i)
        cv2.circle(mask, (int(cx), int(cy)), self.radius, 1, -1)
        return mask.astype(bool)

    def objects(self, i: int) -> dict[str, np.ndarray]:
        """(H, W) bool visible masks of the disk, the square and the triangle in frame ``i``
        (drawn in that order: later shapes cover earlier ones)."""
        import cv2

        disk = self.disk(i)
        square = np.zeros((self.height, self.width), np.uint8)
        sx, sy, side = self._square(i)
        cv2.rectangle(square, (sx, sy), (sx + side, sy + side), 1, -1)
        triangle = np.zeros((self.height, self.width), np.uint8)
        cv2.fillPoly(triangle, [self._triangle()], 1)
        square, triangle = square.astype(bool), triangle.astype(bool)
        return {"disk": disk & ~square & ~triangle, "square": square & ~triangle, "triangle": triangle}

    def _square(self, i: int) -> tuple[int, int, int]:
        return int(self.width * 0.2), int(self.height * (0.55 + 0.15 * np.cos(i / 20.0))), self.radius * 2

    def _triangle(self) -> np.ndarray:
        return np.array([[self.width * 0.7, self.height * 0.9], [self.width * 0.9, self.height * 0.9],
                         [self.width * 0.8, self.height * 0.65]], np.int32)

    def frame(self, i: int) -> np.ndarray:
        import cv2

        img = self.background.copy()
        cx, cy = self.target(i)
        cv2.circle(img, (int(cx), int(cy)), self.radius, (220, 40, 40), -1, cv2.LINE_AA)
        sx, sy, side = self._square(i)
        cv2.rectangle(img, (sx, sy), (sx + side, sy + side), (40, 60, 220), -1)
        cv2.fillPoly(img, [self._triangle()], (40, 200, 60))
        return img


def _image_source(folder: str):
    import cv2

    if not Path(folder).is_dir():
        raise CommandError(f"--images: {folder} is not a folder")
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise CommandError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    frames = []
    for p in paths[:500]:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not frames:
        raise CommandError(f"cannot read any image in {folder}")
    return lambda i: frames[i % len(frames)]


def _video_source(path: str):
    import cv2

    if not Path(path).is_file():
        raise CommandError(f"--video: {path} not found")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise CommandError(f"cannot open video {path}")

    def read(_i: int) -> np.ndarray:
        ok, bgr = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = cap.read()
            if not ok:
                raise CommandError(f"cannot read frames from {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return read


# --- run ------------------------------------------------------------------------------------------------
def _node_command(model: str, backend: str, mode: str) -> list[str]:
    args = [
        sys.executable, "-m", "mobilesam_ros.ros.node", "--ros-args",
        "-r", f"__ns:={NAMESPACE}", "-r", f"image:={NAMESPACE}/camera/image_raw",
        "-p", f"model:={model}", "-p", f"backend:={backend}", "-p", "overlay.max_rate:=0.0",
        "-p", "prompt_persistence:=sticky",
    ]
    if mode == "everything":
        args += ["-p", "mode:=everything", "-p", "everything.strategy:=grid", "-p", "everything.points_per_side:=8"]
    return args


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    overlays = out / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    for old in overlays.glob("*.png"):
        old.unlink()
    width, height = args.size
    if args.fps <= 0 or args.duration <= 0:
        raise CommandError("--fps and --duration must be positive")

    model, backend, what = choose_model(args.model, args.backend, out)
    scene = None
    if args.images:
        source, name = _image_source(args.images), f"images from {args.images}"
    elif args.video:
        source, name = _video_source(args.video), f"video {args.video}"
    else:
        scene = SyntheticScene(width, height)
        source, name = scene.frame, f"a synthetic moving scene ({width}x{height})"
    print(f"[demo] model: {what}", flush=True)
    print(f"[demo] source: {name} at {args.fps:g} fps for {args.duration:g} s", flush=True)
    print(f"[demo] overlays will be written to {overlays}", flush=True)

    try:  # the ROS part (rclpy, the message packages) loads only now, when the demo streams
        from ..ros.demo_stream import stream_to_node
    except ImportError as exc:
        raise CommandError(f"the demo needs ROS 2's Python packages (rclpy, sensor_msgs, ...): {exc}") from exc

    record = DemoRecord(scene, args.mode, overlays)
    node = subprocess.Popen(_node_command(model, backend, args.mode), env=_ros_environment())
    try:
        stream_to_node(node, source, record, namespace=NAMESPACE, fps=args.fps, duration=args.duration)
        summary = record.summary()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        _print_summary(summary, record)
        if not record.written:
            print("[demo] error: no overlay came back from the node", file=sys.stderr)
            return 1
        return 0
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()


def _ros_environment() -> dict[str, str]:
    """The node's environment, and this process's: one DDS domain, on this machine only."""
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 200)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    return env


# --- what the node answered ---------------------------------------------------------------------------
Stamp = tuple[int, int]  # (sec, nanosec) of a frame the demo published


class DemoRecord:
    """What the demo published and what the node answered, scored on the synthetic scene
    (ROS-free: ``ros/demo_stream.py`` feeds it arrays). ``scene`` None: images or a video,
    nothing to score against."""

    def __init__(self, scene: SyntheticScene | None, mode: str, overlays: Path) -> None:
        self.scene, self.mode, self.overlays = scene, mode, overlays
        self.frames_published = 0
        self.frame_of: dict[Stamp, float] = {}  # stamp -> scene time, for what the node answers
        self.answered: list[Stamp] = []  # stamps of the frames the node segmented
        self.written: list[str] = []  # overlay files
        self.diagnostics: dict[str, str] = {}  # the node's newest diagnostics values
        self.prompt: dict = {}  # the click on the disk: frame, stamp, x, y, on_disk
        self.follow: dict = {"ids": [], "iou": []}  # prompt mode: per answered frame after the click
        self.found: dict[str, list[float]] = {}  # everything mode: per scene object, best IoU per answered frame

    def frame_time(self, index: int) -> float:
        """The scene time of the next frame: the synthetic scene moves on per frame the node
        answered (see the module docstring); images and video per frame published."""
        return self.scene.step * len(self.answered) if self.scene is not None else index

    def on_published(self, stamp: Stamp, t: float) -> None:
        self.frame_of[stamp] = t
        self.frames_published += 1

    def waiting_for_click(self) -> bool:
        """Prompt mode on the synthetic scene, the disk not clicked yet (the node answered nothing)."""
        return self.mode == "prompt" and self.scene is not None and not self.prompt

    def click_on_disk(self) -> tuple[Stamp, float, float] | None:
        """(stamp, x, y): the disk on the newest frame the node answered, or None before it
        answered one. That frame is encoded (its embedding cached): stamped with it, the
        point is decoded on it, where it lies on the disk; tracking follows the disk from there."""
        if not self.answered:
            return None
        stamp = self.answered[-1]
        frame = self.frame_of[stamp]
        x, y = self.scene.target(frame)
        self.prompt.update(frame=frame, stamp=stamp, x=x, y=y, on_disk=bool(self.scene.disk(frame)[int(y), int(x)]))
        print(f"[demo] clicked the disk at ({x:.0f}, {y:.0f}) on frame {frame}", flush=True)
        return stamp, x, y

    def on_labels(self, stamp: Stamp, labels: np.ndarray) -> None:
        self.answered.append(stamp)
        if self.scene is None or stamp not in self.frame_of:
            return
        if self.mode == "everything":
            self._score_everything(self.frame_of[stamp], labels)
        elif self.prompt and stamp >= self.prompt["stamp"]:
            self._score_following(self.frame_of[stamp], labels)

    def _score_everything(self, frame: float, labels: np.ndarray) -> None:
        """Per scene object: the best IoU of one of the node's masks with it."""
        for name, truth in self.scene.objects(frame).items():
            ids, counts = np.unique(labels[truth], return_counts=True)
            best = 0.0
            for v, c in zip(ids, counts):
                if v:
                    best = max(best, float(c / max(1, (truth | (labels == v)).sum())))
            self.found.setdefault(name, []).append(best)

    def _score_following(self, frame: float, labels: np.ndarray) -> None:
        """The ids on the disk, and the IoU of the clicked object's mask with it (0 when gone)."""
        disk = self.scene.disk(frame)
        ids, counts = np.unique(labels[disk], return_counts=True)
        on_disk = [int(v) for v, c in zip(ids, counts) if v and c > 0.2 * disk.sum()]
        self.follow["ids"].append(on_disk)
        if self.follow.get("id") is None and on_disk:  # the object the click started (its first frame)
            self.follow["id"] = on_disk[0]
        iou = 0.0
        if self.follow.get("id") is not None:
            mask = labels == self.follow["id"]
            iou = float((mask & disk).sum() / max(1, (mask | disk).sum()))
        self.follow["iou"].append(iou)

    def on_overlay(self, stamp: Stamp, rgb: np.ndarray) -> None:
        import cv2

        path = self.overlays / f"{len(self.written):05d}_{stamp[0]}_{stamp[1]:09d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.written.append(str(path))

    def on_diagnostics(self, values: dict[str, str]) -> None:
        self.diagnostics = dict(values)

    def summary(self) -> dict:
        """summary.json: frames, the node's figures, and the score on the synthetic scene."""
        diag = self.diagnostics
        summary = {
            "frames_published": self.frames_published,
            "overlays_written": len(self.written),
            "overlay_dir": str(self.overlays),
            "node": {k: diag.get(k) for k in ("frames_received", "frames_processed", "frames_dropped",
                                              "encode_ms_mean", "decode_ms_mean", "latency_ms_mean",
                                              "last_error")},
        }
        # over the whole run: the diagnostics' output_rate_hz covers the last 5 s only, and
        # is read here after the stream ended (it was "0.0" after 9 processed frames)
        summary["node"]["output_rate_hz"] = diag.get("output_rate_hz_run")
        if self.scene is not None and self.mode == "prompt":
            summary["prompt"] = {k: v for k, v in self.prompt.items() if k != "stamp"} or None
            ious = self.follow["iou"]
            summary["followed"] = {
                "frames": len(self.follow["ids"]),  # frames the node processed after the click (the click's included)
                "id": self.follow.get("id"),  # the id the click started
                "ids_on_disk": sorted({v for ids in self.follow["ids"] for v in ids}),
                # frames where the clicked object's mask lies on the disk (IoU >= 0.5)
                "frames_followed": sum(1 for v in ious if v >= 0.5),
                # over every processed frame after the click, 0 where the object was not there
                "mean_iou_with_disk": round(float(np.mean(ious)), 3) if ious else None,
                "iou_per_frame": [round(v, 3) for v in ious],
                "scene_step_px": SCENE_STEP_PX,
            }
        if self.scene is not None and self.mode == "everything":
            found = self.found
            summary["everything"] = {
                "frames": len(next(iter(found.values()), [])),  # frames the node processed (segmented everything in)
                # per object of the scene: frames where one of the node's masks covers it at IoU >= 0.5
                "frames_found": {name: sum(1 for v in ious if v >= 0.5) for name, ious in found.items()},
                "mean_best_iou": {name: round(float(np.mean(ious)), 3) for name, ious in found.items()},
            }
        return summary


def _print_summary(summary: dict, record: DemoRecord) -> None:
    diag = record.diagnostics
    print(f"[demo] published {record.frames_published} frames; the node segmented {diag.get('frames_processed', '?')} "
          f"(newest frame only: encode {diag.get('encode_ms_mean', '?')} ms, "
          f"latency {diag.get('latency_ms_mean', '?')} ms)", flush=True)
    print(f"[demo] {len(record.written)} overlays written to {record.overlays}", flush=True)
    if summary.get("prompt"):
        f = summary["followed"]
        print(f"[demo] after the click the node processed {f['frames']} frame(s): the disk was followed "
              f"(#{f['id']}, IoU >= 0.5) in {f['frames_followed']} of them; mean IoU with the disk over all "
              f"{f['frames']}: {f['mean_iou_with_disk']}; ids on the disk {f['ids_on_disk']} (the scene moves on "
              f"{SCENE_STEP_PX:g} px per processed frame)", flush=True)
    elif summary.get("everything", {}).get("frames"):
        e = summary["everything"]
        parts = ", ".join(f"{name} in {e['frames_found'][name]} (mean best IoU {e['mean_best_iou'][name]})"
                          for name in e["frames_found"])
        print(f"[demo] everything: of the {e['frames']} frame(s) the node processed, a mask (IoU >= 0.5) found the "
              f"{parts}", flush=True)
    elif record.scene is not None and record.mode == "prompt":
        print("[demo] the node answered no frame in time: the disk was not clicked", flush=True)
    elif record.scene is not None:
        print("[demo] the node answered no frame in time: nothing was segmented", flush=True)
