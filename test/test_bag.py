"""`mobilesam-ros bag`: recorded frames in (rosbag2 sqlite3 and MCAP, written here with
rosbags), the node's outputs out, read back with rosbags and checked against
SamPredictor on the same frames and prompts.

The model: the exported synthetic checkpoint's real prompt encoder + mask decoder
(ONNX Runtime), behind a cheap image encoder (``FastEncoder``), so a frame takes milliseconds and
the tests take seconds; what is under test (reading, pairing, converting, writing)
does not depend on the encoder. One test runs the command end to end on the
exported model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags")

from mobilesam_ros.bag import BagOptions, BagSegmenter, InputBag, pair_detections
from mobilesam_ros.bag.coco import CocoWriter
from mobilesam_ros.bag.typestore import default_message, default_typestore
from mobilesam_ros.live.frames import image_to_rgb
from mobilesam_ros.predictor import SamPredictor
from mobilesam_ros.runtime.base import Runtime
from mobilesam_ros.visualize import masks_to_label_image

H, W = 48, 64
STORE = default_typestore()
IMAGE, COMPRESSED, DETECTIONS = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "vision_msgs/msg/Detection2DArray"


# --- the model ------------------------------------------------------------------------------
class FastEncoder(Runtime):
    """A real decoder behind a cheap deterministic encoder (see the module docstring)."""

    name = "fast-encoder"

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.num_mask_outputs = inner.num_mask_outputs
        self.proj = np.random.default_rng(0).standard_normal((256, 3)).astype(np.float32)

    def encode(self, image: np.ndarray) -> np.ndarray:
        pooled = image[0].reshape(3, 64, 16, 64, 16).mean(axis=(2, 4))
        return np.einsum("kc,chw->khw", self.proj, pooled)[None].astype(np.float32)

    def decode(self, *args):
        return self.inner.decode(*args)


@pytest.fixture(scope="module")
def exported(request) -> Path:
    """The session's exported synthetic model, or MOBILESAM_TEST_EXPORTED (an export
    of the synthetic checkpoint kept between runs: the export takes minutes on a
    busy machine)."""
    kept = os.environ.get("MOBILESAM_TEST_EXPORTED")
    return Path(kept) if kept else request.getfixturevalue("exported_model")


@pytest.fixture(scope="module")
def runtime(exported):
    from mobilesam_ros.runtime import create_runtime

    return FastEncoder(create_runtime(str(exported), "onnxruntime", num_threads=1))


# --- synthetic recordings -------------------------------------------------------------------
def scene(i: int) -> np.ndarray:
    """An RGB frame: a bright rectangle moving over a gradient."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 3, y * 4, np.full_like(x, 60)], -1).astype(np.uint8)
    rgb[10:30, 8 + 3 * i:30 + 3 * i] = (250, 240, 20)
    return rgb


def encode_raw(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """RGB -> (bytes, step) in ``encoding``."""
    if encoding == "rgb8":
        data = rgb
    elif encoding == "bgr8":
        data = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        data = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    elif encoding == "mono8":
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == "mono16":
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    elif encoding == "yuv422":  # UYVY
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
        data = np.empty((H, W, 2), np.uint8)
        data[:, :, 1] = yuv[:, :, 0]
        data[:, 0::2, 0] = yuv[:, 0::2, 1]
        data[:, 1::2, 0] = yuv[:, 0::2, 2]
    else:
        raise ValueError(encoding)
    data = np.ascontiguousarray(data)
    return data.reshape(-1).view(np.uint8), data.strides[0]


def header(stamp: tuple[int, int], frame_id: str = "camera"):
    T = STORE.types["builtin_interfaces/msg/Time"]
    return STORE.types["std_msgs/msg/Header"](stamp=T(sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id)


def image_msg(rgb: np.ndarray, encoding: str, stamp, data: np.ndarray | None = None, step: int | None = None):
    raw, raw_step = encode_raw(rgb, encoding) if data is None else (data, step)
    return STORE.types[IMAGE](header=header(stamp), height=H, width=W, encoding=encoding, is_bigendian=0,
                              step=raw_step, data=raw)


def compressed_msg(rgb: np.ndarray, fmt: str, stamp):
    ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return STORE.types[COMPRESSED](header=header(stamp), format=fmt, data=buf.reshape(-1))


def detections_msg(stamp, boxes, class_ids, det_ids=None):
    msg = default_message(STORE, DETECTIONS)
    msg.header = header(stamp)
    dets = []
    for k, ((x0, y0, x1, y1), cid) in enumerate(zip(boxes, class_ids)):
        det = default_message(STORE, "vision_msgs/msg/Detection2D")
        det.header = header(stamp)
        det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
        det.bbox.size_x, det.bbox.size_y = float(x1 - x0), float(y1 - y0)
        hyp = default_message(STORE, "vision_msgs/msg/ObjectHypothesisWithPose")
        hyp.hypothesis.class_id, hyp.hypothesis.score = cid, 0.9
        det.results = [hyp]
        det.id = det_ids[k] if det_ids else ""
        dets.append(det)
    msg.detections = dets
    return msg


def write_bag(path: Path, storage: str, messages: list[tuple[str, str, int, object]]) -> Path:
    """messages: (topic, msgtype, log time ns, message or raw bytes)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, t, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=STORE)
            raw = msg if isinstance(msg, (bytes, bytearray)) else STORE.serialize_cdr(msg, msgtype)
            writer.write(conns[topic], t, raw)
    return path


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    bag = InputBag(path)
    out: dict[str, list] = {}
    try:
        for conn, t, raw in bag.messages(bag.connections):
            out.setdefault(conn.topic, []).append((t, bag.deserialize(raw, conn.msgtype)))
        types = {c.topic: c.msgtype for c in bag.connections}
    finally:
        bag.close()
    out["__types__"] = types
    return out


STAMP0 = 1_700_000_000
FRAME_T = [2_000_000_000 + i * 100_000_000 for i in range(7)]
STAMPS = [(STAMP0 + i, 250_000) for i in range(7)]
ENCODINGS = ["rgb8", "bgr8", "mono8", "mono16", "yuv422", "bad", "rgba8"]  # frame 5 is undecodable
BOX_A, BOX_B, BOX_C = (6.0, 8.0, 34.0, 32.0), (20.0, 5.0, 50.0, 40.0), (2.0, 30.0, 30.0, 46.0)


def recording(path: Path, storage: str) -> Path:
    """Seven frames in six encodings (frame 5: an unknown encoding, skipped), detections:
    frame 0's logged after frame 1, an empty array for frame 2, an unstamped one logged
    between frames 3 and 4 (applies to frame 3), plus an unrelated topic."""
    msgs = []
    for i, enc in enumerate(ENCODINGS):
        if enc == "bad":
            data, step = encode_raw(scene(i), "rgb8")
            msg = image_msg(scene(i), "bayer_foo8", STAMPS[i], data, step)
        else:
            msg = image_msg(scene(i), enc, STAMPS[i])
        msgs.append(("/camera/image_raw", IMAGE, FRAME_T[i], msg))
    msgs.append(("/detector/detections", DETECTIONS, FRAME_T[1] + 5, detections_msg(STAMPS[0], [BOX_A], ["3"], ["t1"])))
    msgs.append(("/detector/detections", DETECTIONS, FRAME_T[2] + 5, detections_msg(STAMPS[2], [], [])))
    msgs.append(("/detector/detections", DETECTIONS, FRAME_T[3] + 5,
                 detections_msg((0, 0), [BOX_B, BOX_C], ["person", "7"])))
    msgs.append(("/tf_static_like", "std_msgs/msg/String", FRAME_T[0] + 1, STORE.types["std_msgs/msg/String"](data="x")))
    return write_bag(path, storage, msgs)


#: which detection boxes apply to each frame (sticky): the pairing above
EXPECTED_BOXES = {0: [BOX_A], 1: [BOX_A], 2: [], 3: [BOX_B, BOX_C], 4: [BOX_B, BOX_C], 6: [BOX_B, BOX_C]}
EXPECTED_CLASSES = {0: ["3"], 1: ["3"], 2: [], 3: ["person", "7"], 4: ["person", "7"], 6: ["person", "7"]}


def decoded_frame(i: int) -> np.ndarray:
    """The RGB the node's conversion makes of frame i (mono/yuv lose colour)."""
    data, step = encode_raw(scene(i), ENCODINGS[i])
    return np.array(image_to_rgb(data, ENCODINGS[i], H, W, step))


_EXPECTED: dict = {}


def expected_masks(runtime, i: int) -> np.ndarray:
    """(K, H, W): what SamPredictor gives for frame i with the boxes that apply to it
    (computed once per frame: both storages hold the same frames)."""
    if i not in _EXPECTED:
        boxes = EXPECTED_BOXES[i]
        if not boxes:
            _EXPECTED[i] = np.zeros((0, H, W), bool)
        else:
            predictor = SamPredictor(runtime)
            predictor.set_image(decoded_frame(i))
            _EXPECTED[i] = predictor.predict_boxes(np.asarray(boxes, np.float32)).masks[:, 0]
    return _EXPECTED[i]


def run_bag(runtime, src: Path, out: Path, coco: Path | None = None, every: int = 1, **options) -> object:
    opts = BagOptions(**{"image_topic": "/camera/image_raw", **options})
    segmenter = BagSegmenter(SamPredictor(runtime, cache_size=1), opts)
    bag = InputBag(src)
    try:
        return segmenter.run(bag, out, CocoWriter(coco, every) if coco else None)
    finally:
        bag.close()


# --- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_detections_topic_every_frame_node_outputs(runtime, tmp_path, storage):
    from pycocotools import mask as mask_util

    src = recording(tmp_path / "in", storage)
    coco = tmp_path / "coco" if storage == "sqlite3" else None
    summary = run_bag(runtime, src, tmp_path / "out", coco=coco, prompts_topic="/detector/detections", copy_input=True)
    assert summary.frames_total == 7 and summary.segmented == 6
    assert sum(summary.skipped.values()) == 1 and "unsupported encoding" in next(iter(summary.skipped))

    out = read_bag(tmp_path / "out")
    types = out.pop("__types__")
    assert types["/mobilesam/mask"] == IMAGE and types["/mobilesam/labels"] == IMAGE
    assert types["/mobilesam/detections"] == DETECTIONS
    assert "/mobilesam/overlay" not in types  # only with --overlay
    # --copy-input: every input topic, every message, unchanged
    src_msgs = read_bag(src)
    for topic in ("/camera/image_raw", "/detector/detections", "/tf_static_like"):
        assert [t for t, _ in out[topic]] == [t for t, _ in src_msgs[topic]]
    assert out["/camera/image_raw"][5][1].encoding == "bayer_foo8"

    good = [i for i, e in enumerate(ENCODINGS) if e != "bad"]
    for name in ("mask", "labels", "detections"):
        msgs = out[f"/mobilesam/{name}"]
        assert len(msgs) == len(good), name  # one per good frame, empty results included
        assert [t for t, _ in msgs] == [FRAME_T[i] for i in good]  # logged when the frame was
        assert [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in msgs] == [STAMPS[i] for i in good]
        assert all(m.header.frame_id == "camera" for _, m in msgs)
    for k, i in enumerate(good):
        labels_msg, mask_msg, det_msg = (out[f"/mobilesam/{n}"][k][1] for n in ("labels", "mask", "detections"))
        assert labels_msg.encoding == "mono16" and mask_msg.encoding == "mono8"
        labels = labels_msg.data.view(np.uint16).reshape(H, W)
        want = masks_to_label_image(expected_masks(runtime, i))
        np.testing.assert_array_equal(labels, want, err_msg=f"frame {i} ({ENCODINGS[i]})")
        np.testing.assert_array_equal(mask_msg.data.reshape(H, W), np.where(want > 0, 255, 0))
        assert [d.results[0].hypothesis.class_id for d in det_msg.detections] == EXPECTED_CLASSES[i]
        assert [d.id for d in det_msg.detections] == [str(n + 1) for n in range(len(EXPECTED_BOXES[i]))]
        for n, d in enumerate(det_msg.detections):  # bbox = the mask's box
            ys, xs = np.nonzero(labels == n + 1)
            if len(xs):
                assert d.bbox.center.position.x == pytest.approx((xs.min() + xs.max() + 1) / 2)
                assert d.bbox.size_x == pytest.approx(xs.max() + 1 - xs.min())
    assert any(len(out["/mobilesam/detections"][k][1].detections) == 0 for k in range(len(good)))
    if coco is None:
        return
    # COCO: categories from the class ids (integer ids keep their value), one image per
    # segmented frame, RLE masks (decoded by pycocotools) equal to SamPredictor's
    doc = json.loads((coco / "annotations.json").read_text())
    assert {c["name"]: c["id"] for c in doc["categories"]} == {"3": 3, "person": 8, "7": 7}
    assert [im["ros_stamp"] for im in doc["images"]] == [{"sec": STAMPS[i][0], "nanosec": STAMPS[i][1]} for i in good]
    for im, i in zip(doc["images"], good):
        assert cv2.imread(str(coco / im["file_name"])).shape == (H, W, 3)
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        assert [a["category_id"] for a in anns] == [{"3": 3, "person": 8, "7": 7}[c] for c in EXPECTED_CLASSES[i]]
        masks = expected_masks(runtime, i)
        assert len(anns) == len(masks)
        for a, mask in zip(anns, masks):
            np.testing.assert_array_equal(mask_util.decode(a["segmentation"]).astype(bool), mask)
            assert a["area"] == int(mask.sum())


def test_pairing_rules():
    from mobilesam_ros.bag.pipeline import Detections

    frames = [(100, (1, 0)), (200, (2, 0)), (300, (3, 0)), (400, None)]

    def det(t, key):
        return Detections(t, key, np.zeros((0, 4)), [], [])

    late, early, unmatched, unstamped, first = det(350, (1, 0)), det(150, (3, 0)), det(250, (9, 9)), det(410, None), det(50, None)
    plan = pair_detections(frames, [late, early, unmatched, unstamped, first])
    assert plan[0] == [first, late]  # by stamp, however late it was logged
    assert plan[2] == [early]  # by stamp, even before its frame
    assert plan[1] == [unmatched]  # no such stamp: the latest frame logged before it
    assert plan[3] == [unstamped]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_compressed_frames_fixed_point_overlay_coco(runtime, tmp_path, storage):
    from pycocotools import mask as mask_util

    msgs = [("/cam/image/compressed", COMPRESSED, FRAME_T[i], compressed_msg(scene(i), fmt, STAMPS[i]))
            for i, fmt in enumerate(["png", "jpeg", "png"])]
    msgs.append(("/cam/image/compressed", COMPRESSED, FRAME_T[3],
                 STORE.types[COMPRESSED](header=header(STAMPS[4]), format="jpeg", data=np.frombuffer(b"notajpeg", np.uint8))))
    src = write_bag(tmp_path / "in", storage, msgs)
    # the node's transport naming: --image-topic /cam/image finds /cam/image/compressed
    summary = run_bag(runtime, src, tmp_path / "out", coco=tmp_path / "coco", every=2, image_topic="/cam/image",
                      points=np.array([[20.0, 20.0]], np.float32), point_labels=np.array([1]),
                      overlay=True, storage="sqlite3" if storage == "mcap" else "mcap")
    assert summary.segmented == 3 and sum(summary.skipped.values()) == 1
    from mobilesam_ros.bag import storage_of

    assert storage_of(tmp_path / "out") == ("sqlite3" if storage == "mcap" else "mcap")  # --storage
    out = read_bag(tmp_path / "out")
    assert len(out["/mobilesam/overlay"]) == 3
    assert out["/mobilesam/overlay"][0][1].encoding == "rgb8"

    predictor = SamPredictor(runtime)
    masks_out = []
    for k in range(3):
        rgb = cv2.cvtColor(cv2.imdecode(msgs[k][3].data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        predictor.set_image(rgb)
        pred = predictor.predict(np.array([[20.0, 20.0]], np.float32), np.array([1.0], np.float32), multimask_output=True)
        best = pred.masks[[int(pred.iou_predictions.argmax())]]
        labels = out["/mobilesam/labels"][k][1].data.view(np.uint16).reshape(H, W)
        np.testing.assert_array_equal(labels, masks_to_label_image(best), err_msg=f"frame {k}")
        masks_out.append(best)

    # COCO: every 2nd frame, original compressed bytes, RLE decodes to the saved masks
    doc = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["images/000000.png", "images/000001.png"]
    assert (tmp_path / "coco" / "images" / "000000.png").read_bytes() == bytes(msgs[0][3].data)
    assert [im["ros_stamp"]["sec"] for im in doc["images"]] == [STAMPS[0][0], STAMPS[2][0]]
    assert doc["categories"] == [{"id": 1, "name": "object", "supercategory": ""}]
    for im, k in zip(doc["images"], (0, 2)):
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        assert len(anns) == 1 and anns[0]["track_id"] == 1  # the fixed prompt's object
        mask = mask_util.decode(anns[0]["segmentation"]).astype(bool)
        np.testing.assert_array_equal(mask, masks_out[k][0])
        assert anns[0]["area"] == int(mask_util.area(anns[0]["segmentation"]))
        if mask.any():
            assert anns[0]["bbox"] == pytest.approx(mask_util.toBbox(anns[0]["segmentation"]).tolist())


def test_interrupted_run_leaves_a_readable_bag(runtime, tmp_path):
    src = recording(tmp_path / "in", "mcap")
    opts = BagOptions(image_topic="/camera/image_raw", prompts_topic="/detector/detections")
    segmenter = BagSegmenter(SamPredictor(runtime, cache_size=1), opts)
    coco = CocoWriter(tmp_path / "coco")

    def stop_after_three(done, total):
        if done == 3:
            raise KeyboardInterrupt
    # frames 0, 1 (box A) and 2 (empty)

    bag = InputBag(src)
    with pytest.raises(KeyboardInterrupt):
        segmenter.run(bag, tmp_path / "out", coco, progress=stop_after_three)
    bag.close()
    out = read_bag(tmp_path / "out")
    assert len(out["/mobilesam/labels"]) == 3 and len(out["/mobilesam/detections"]) == 3
    assert len(json.loads((tmp_path / "coco" / "annotations.json").read_text())["images"]) == 3


def test_tracking_fixed_box_ids_agree_everywhere(runtime, tmp_path):
    from mobilesam_ros.live.tracking import TrackingConfig

    msgs = [("/camera/image_raw", IMAGE, FRAME_T[i], image_msg(scene(i), "rgb8", STAMPS[i])) for i in range(4)]
    src = write_bag(tmp_path / "in", "mcap", msgs)
    summary = run_bag(runtime, src, tmp_path / "out", coco=tmp_path / "coco", boxes=np.array([BOX_A], np.float32),
                      tracking=TrackingConfig())
    assert summary.segmented == 4
    out = read_bag(tmp_path / "out")
    doc = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    # the first frame: the box prompt as given, object (track) 1
    labels0 = out["/mobilesam/labels"][0][1].data.view(np.uint16).reshape(H, W)
    predictor = SamPredictor(runtime)
    predictor.set_image(scene(0))
    expected = predictor.predict_boxes(np.array([BOX_A], np.float32)).masks[:, 0]
    np.testing.assert_array_equal(labels0, masks_to_label_image(expected))
    assert [d.id for d in out["/mobilesam/detections"][0][1].detections] == ["1"]
    # every frame: ~/labels values, Detection2D ids and COCO track ids are the tracker's ids
    for k in range(4):
        labels = out["/mobilesam/labels"][k][1].data.view(np.uint16).reshape(H, W)
        ids = [int(d.id) for d in out["/mobilesam/detections"][k][1].detections]
        assert set(np.unique(labels)) - {0} <= set(ids)
        assert [a["track_id"] for a in doc["annotations"] if a["image_id"] == k + 1] == ids


def test_depth_and_camera_info_give_the_nodes_3d_outputs(runtime, tmp_path):
    from mobilesam_ros.live.config import NodeConfig
    from mobilesam_ros.live.rgbd import objects_from_depth
    from mobilesam_ros.messages.objects3d import depth_options

    K = [50.0, 0, W / 2, 0, 50.0, H / 2, 0, 0, 1]
    info = default_message(STORE, "sensor_msgs/msg/CameraInfo")
    info.header, info.height, info.width, info.k = header(STAMPS[0], "camera_optical"), H, W, np.array(K)
    msgs = [("/camera/camera_info", "sensor_msgs/msg/CameraInfo", FRAME_T[0] - 10, info)]
    depth_mm = np.full((H, W), 1500, np.uint16)  # a wall 1.5 m away
    for i in range(3):
        msgs.append(("/camera/image_raw", IMAGE, FRAME_T[i], image_msg(scene(i), "rgb8", STAMPS[i])))
        if i != 1:  # frame 1 has no depth: no 3D for it, counted
            d = STORE.types[IMAGE](header=header(STAMPS[i]), height=H, width=W, encoding="16UC1", is_bigendian=0,
                                   step=2 * W, data=depth_mm.reshape(-1).view(np.uint8))
            msgs.append(("/camera/depth", IMAGE, FRAME_T[i] + 50_000_000, d))  # logged after the frame
    msgs.append(("/camera/depth", IMAGE, FRAME_T[1] + 90_000_000, STORE.types[IMAGE](
        header=header((STAMPS[1][0], STAMPS[1][1] + 60_000_000)), height=H, width=W, encoding="16UC1",
        is_bigendian=0, step=2 * W, data=depth_mm.reshape(-1).view(np.uint8))))  # 60 ms off: too far
    src = write_bag(tmp_path / "in", "sqlite3", msgs)
    summary = run_bag(runtime, src, tmp_path / "out", boxes=np.array([BOX_A], np.float32), depth_topic="/camera/depth",
                      camera_info_topic="/camera/camera_info")
    assert summary.frames_3d == 2 and sum(summary.skipped_3d.values()) == 1
    out = read_bag(tmp_path / "out")
    types = out.pop("__types__")
    assert types["/mobilesam/detections_3d"] == "vision_msgs/msg/Detection3DArray"
    assert types["/mobilesam/points"] == "sensor_msgs/msg/PointCloud2"
    assert types["/mobilesam/markers"] == "visualization_msgs/msg/MarkerArray"
    for name in ("detections_3d", "points", "markers"):
        msgs3d = out[f"/mobilesam/{name}"]
        assert [t for t, _ in msgs3d] == [FRAME_T[0], FRAME_T[2]]
        # stamped like their frames (a MarkerArray has no header: each of its markers has one)
        headers = [[mk.header for mk in m.markers] if name == "markers" else [m.header] for _, m in msgs3d]
        assert [{(h.stamp.sec, h.stamp.nanosec) for h in hs} for hs in headers] == [{STAMPS[0]}, {STAMPS[2]}]
    opts = depth_options(NodeConfig.defaults())
    for k, i in enumerate((0, 2)):
        labels = out["/mobilesam/labels"][i][1].data.view(np.uint16).reshape(H, W)
        masks = np.stack([labels == v for v in range(1, int(labels.max()) + 1)]) if labels.max() else np.zeros((0, H, W), bool)
        dets = out["/mobilesam/detections_3d"][k][1]
        assert dets.header.frame_id == "camera_optical"
        want = objects_from_depth(masks, depth_mm, np.array(K).reshape(3, 3), 0.001, options=opts)
        got = [d for d in dets.detections]
        assert len(got) == sum(o is not None for o in want)
        for d, o in zip(got, [o for o in want if o is not None]):
            assert d.results[0].pose.pose.position.z == pytest.approx(1.5, abs=1e-3)
            assert [d.bbox.center.position.x, d.bbox.center.position.y] == pytest.approx(o.center[:2].tolist(), abs=0.02)
        cloud = out["/mobilesam/points"][k][1]
        assert len(got) == 1 and cloud.width == len(want[0].points) > 100  # the object was measured
        assert len(out["/mobilesam/markers"][k][1].markers) == 3  # DELETEALL, box, label


def test_everything_grid(runtime, tmp_path):
    from mobilesam_ros.everything import EverythingConfig, EverythingSegmenter

    msgs = [("/camera/image_raw", IMAGE, FRAME_T[0], image_msg(scene(0), "rgb8", STAMPS[0]))]
    src = write_bag(tmp_path / "in", "mcap", msgs)
    # no score filters: the random-weight model's masks all fail the published ones
    config = EverythingConfig(strategy="grid", points_per_side=3, pred_iou_thresh=-1e9, stability_score_thresh=0.0)
    predictor = SamPredictor(runtime, cache_size=1)
    segmenter = BagSegmenter(predictor, BagOptions(image_topic="/camera/image_raw"),
                             EverythingSegmenter(predictor, config))
    bag = InputBag(src)
    summary = segmenter.run(bag, tmp_path / "out")
    bag.close()
    assert summary.segmented == 1
    out = read_bag(tmp_path / "out")
    want = EverythingSegmenter(SamPredictor(runtime), config).segment(scene(0)).masks
    assert len(want) > 0  # the 3x3 grid finds something to compare
    labels = out["/mobilesam/labels"][0][1].data.view(np.uint16).reshape(H, W)
    np.testing.assert_array_equal(labels, masks_to_label_image(want))
    assert len(out["/mobilesam/detections"][0][1].detections) == len(want)


def test_bag_path_imports_without_rclpy_and_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'rclpy'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mobilesam_ros.bag, mobilesam_ros.bag.recorded_depth, mobilesam_ros.bag.coco, mobilesam_ros.commands.bag\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_output_types_hash_like_the_installed_ros_messages():
    """The outputs are written with rosbags' definitions (vision_msgs: ours): their type
    hashes (RIHS01, in the bag's metadata) must be what a ROS install computes."""
    import glob

    from mobilesam_ros.bag.recorded_depth import OUTPUTS_3D

    repo = Path(__file__).resolve().parents[1]
    shares = [Path(sys.prefix) / "share", *map(Path, glob.glob(str(repo / "build/vision_msgs/*/install/share")))]
    shares += [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    checked = []
    for msgtype in (IMAGE, DETECTIONS, *OUTPUTS_3D.values()):
        package, _, name = msgtype.split("/")
        found = next((d / package / "msg" / f"{name}.json" for d in shares
                      if (d / package / "msg" / f"{name}.json").is_file()), None)
        if found is None:
            continue
        hashes = {h["type_name"]: h["hash_string"] for h in json.loads(found.read_text())["type_hashes"]}
        assert STORE.hash_rihs01(msgtype) == hashes[msgtype], msgtype
        checked.append(msgtype)
    if not checked:
        pytest.skip("no installed ROS message descriptions (share/<pkg>/msg/*.json) to compare with")


# --- the command ------------------------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, list[str]]:
    from mobilesam_ros.cli import main

    rc = main(["bag", *map(str, args)])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    return recording(tmp_path_factory.mktemp("bag") / "in", "sqlite3")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-topic", "/nope", "--point", "5,5"], "image topic /nope is not in"),
        (["--image-topic", "/camera/image_raw", "--prompts-topic", "/camera/image_raw"],
         "has type sensor_msgs/msg/Image, expected vision_msgs/msg/Detection2DArray"),
        (["--image-topic", "/camera/image_raw"], "no prompt source"),
        (["--image-topic", "/camera/image_raw", "--point", "1,x"], "--point must be"),
        (["--image-topic", "/camera/image_raw", "--everything"], "--strategy boxes needs boxes"),
        (["--image-topic", "/camera/image_raw", "--everything", "--strategy", "grid", "--points-per-side", "0"],
         "points_per_side must be >= 1"),
    ],
)
def test_errors_are_one_line(small_bag, tmp_path, capsys, args, message):
    # the model is never loaded: every input error comes first
    rc, lines = cli(capsys, small_bag, "--model", tmp_path / "never-loaded.pt", "--out", tmp_path / "o", *args)
    assert rc == 2
    assert len(lines) == 1, lines
    assert message in lines[0]
    if "not in" in message:  # the bag's topics are listed
        assert "/camera/image_raw (Image, 7)" in lines[0] and "/detector/detections (Detection2DArray, 3)" in lines[0]


def test_bad_bags_and_existing_output(small_bag, tmp_path, capsys):
    common = ["--model", tmp_path / "x.pt", "--image-topic", "/camera/image_raw", "--point", "5,5"]
    existing = tmp_path / "exists"
    existing.mkdir()
    rc, lines = cli(capsys, small_bag, "--out", existing, *common)
    assert rc == 2 and len(lines) == 1 and "exists: choose another --out or pass --overwrite" in lines[0]
    rc, lines = cli(capsys, small_bag, "--out", existing, "--overwrite", *common)
    assert rc == 2 and len(lines) == 1 and "not a rosbag2: not overwriting it" in lines[0]
    rc, lines = cli(capsys, tmp_path / "missing", "--out", tmp_path / "o", *common)
    assert rc == 2 and len(lines) == 1 and "input bag not found" in lines[0]
    # a truncated MCAP file, and garbage named .db3
    mcap = recording(tmp_path / "m", "mcap")
    data = next(mcap.glob("*.mcap")).read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.db3").write_bytes(b"not a database" * 100)
    for bad in ("cut.mcap", "junk.db3"):
        rc, lines = cli(capsys, tmp_path / bad, "--out", tmp_path / "o", *common)
        assert rc == 2, bad
        assert len(lines) == 1 and ("corrupt" in lines[0] or "cannot read" in lines[0]), lines


def test_command_interrupted_then_overwritten(runtime, small_bag, tmp_path, capsys, monkeypatch):
    import mobilesam_ros.commands.bag as command
    from mobilesam_ros.bag.pipeline import BagSegmenter as Segmenter

    monkeypatch.setattr(command, "open_runtime", lambda args: runtime)
    frame = Segmenter._frame
    calls = []

    def interrupt_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return frame(self, *args)

    args = [small_bag, "--model", "m", "--image-topic", "/camera/image_raw", "--prompts-topic",
            "/detector/detections", "--out", tmp_path / "out", "--quiet"]
    monkeypatch.setattr(Segmenter, "_frame", interrupt_third)
    rc, lines = cli(capsys, *args)
    assert rc == 130 and lines[-1].startswith("mobilesam-ros bag: interrupted after 2 of 7 frame(s)")
    assert len(read_bag(tmp_path / "out")["/mobilesam/labels"]) == 2  # closed: a readable bag
    monkeypatch.setattr(Segmenter, "_frame", frame)
    rc, lines = cli(capsys, *args, "--overwrite", "--no-tracking")
    assert rc == 0, lines
    summary = "6 of 7 frame(s) segmented, 8 object(s); 1 skipped (1 unsupported encoding 'bayer_foo8')"
    assert summary in lines, "\n".join(lines)
    assert len(read_bag(tmp_path / "out")["/mobilesam/labels"]) == 6


def test_command_end_to_end_exported_model(exported, tmp_path):
    """The real command in its own process, on the exported model (encoder included)."""
    from mobilesam_ros.runtime import create_runtime

    msgs = [("/cam/image", IMAGE, FRAME_T[0], image_msg(scene(0), "bgr8", STAMPS[0]))]
    src = write_bag(tmp_path / "in", "mcap", msgs)
    result = subprocess.run(
        [sys.executable, "-m", "mobilesam_ros", "bag", str(src), "--model", str(exported), "--image-topic",
         "/cam/image", "--point", "20,20", "--out", str(tmp_path / "out"), "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "1 of 1 frame(s) segmented" in result.stderr and "over model time" in result.stderr
    out = read_bag(tmp_path / "out")
    assert [len(out[f"/mobilesam/{n}"]) for n in ("mask", "labels", "detections")] == [1, 1, 1]
    predictor = SamPredictor(create_runtime(str(exported), "onnxruntime", num_threads=1))
    predictor.set_image(scene(0))
    pred = predictor.predict(np.array([[20.0, 20.0]], np.float32), np.array([1.0], np.float32), multimask_output=True)
    want = masks_to_label_image(pred.masks[[int(pred.iou_predictions.argmax())]])
    np.testing.assert_array_equal(out["/mobilesam/labels"][0][1].data.view(np.uint16).reshape(H, W), want)
