"""segment_node runs TinySAM and MobileSAMv2 as their authors do, declared by one
parameter each (real DDS, node in its own process, torch backend on the parity
checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import Image

from parity import expected_masks, load_cases, mask_ious
from ros_harness import Client, NodeProcess, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
NS = "/mobilesam"


def _point(x, y, z, sec):
    msg = PointStamped()
    msg.header.stamp.sec = sec
    msg.point.x, msg.point.y, msg.point.z = float(x), float(y), float(z)
    return msg


def test_tinysam_node_keeps_the_best_of_three(parity_dir, tinysam_dir, mobilesamv2_dir, tmp_path):
    """A two-point object (SAM: token 0) on a TinySAM node: the best-scored of TinySAM's
    three masks, as its reference gives it. Then a MobileSAMv2 node starts with its
    decoder file and says which model it runs."""
    from mobilesam_ros.commands._common import load_image

    env = ros_environment(DOMAIN)
    image = "picture1.jpg"
    case = next(c for c in load_cases(tinysam_dir) if c.image == image and c.id == "points_fg_bg")
    expected = np.load(tinysam_dir / "expected.npz")
    best = int(np.argmax(expected[f"{case.key}/iou_predictions"]))
    want = expected_masks(expected, case.key, case.image_size[1])[best]
    rgb = load_image(parity_dir / "images" / image)

    node = NodeProcess(
        ["-p", f"model:={parity_dir / 'checkpoint.pt'}", "-p", "variant:=tinysam", "-p", "backend:=torch",
         "-p", "accumulate_points:=true", "-p", "overlay.enabled:=false", "-r", "image:=/variants/image"],
        env, tmp_path / "tinysam.log",
    )
    client = Client(DOMAIN, "variants_client")
    try:
        assert node.wait_for_log("ready:", 300), node.log()
        assert "TinySAM" in node.log()
        masks = client.subscribe(Image, f"{NS}/mask")
        frames = client.publisher(Image, "/variants/image", depth=1)
        points = client.publisher(PointStamped, f"{NS}/prompt/point")
        assert client.wait_matched(frames) and client.wait_matched(points)
        assert client.wait_publishers([f"{NS}/mask"])
        frames.publish(image_msg(rgb, "rgb8", 7))
        assert client.wait_until(lambda: any(m.header.stamp.sec == 7 for m in masks), 180), node.log()
        (fg, bg) = case.raw["points"]
        points.publish(_point(*fg, 1.0, 7))
        points.publish(_point(*bg, -1.0, 7))
        # the node decodes after each point (or both at once); the last mask is of the two-point object
        def two_point_mask():
            got = [m for m in masks if m.header.stamp.sec == 7]
            if not got:
                return None
            mask = np.frombuffer(got[-1].data, np.uint8).reshape(rgb.shape[:2]) > 0
            return mask if mask_ious(mask[None], want[None])[0] >= 0.99 else None

        assert client.wait_until(lambda: two_point_mask() is not None, 180), node.log()
    finally:
        client.close()
        node.stop()  # a clean exit is test_ros_node's business; here the outputs are

    v2 = NodeProcess(
        ["-p", f"model:={parity_dir / 'checkpoint.pt'}", "-p", "backend:=torch",
         "-p", f"decoder_checkpoint:={mobilesamv2_dir / 'Prompt_guided_Mask_Decoder.pt'}"],
        env, tmp_path / "v2.log",
    )
    try:
        assert v2.wait_for_log("ready:", 300), v2.log()
        assert "MobileSAMv2 (prompt-guided decoder Prompt_guided_Mask_Decoder.pt)" in v2.log()
    finally:
        v2.stop()
