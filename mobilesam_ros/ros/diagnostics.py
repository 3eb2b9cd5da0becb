"""NodeStats snapshot -> diagnostic_msgs/DiagnosticArray (for /diagnostics): one status
per camera of the segment node."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

#: an error within this many seconds makes the status WARN
RECENT_ERROR_S = 10.0
#: no frame for this long (after frames were flowing) makes the status STALE
STALE_AFTER_S = 5.0


def status_level(snapshot: dict[str, Any]) -> tuple[bytes, str]:
    """(level, message) for a NodeStats snapshot."""
    since_frame = snapshot.get("seconds_since_frame")
    since_error = snapshot.get("seconds_since_error")
    if since_frame is None:
        return DiagnosticStatus.WARN, "waiting for images"
    if since_frame > STALE_AFTER_S:
        return DiagnosticStatus.STALE, f"no image for {since_frame:.0f} s"
    if since_error is not None and since_error < RECENT_ERROR_S:
        return DiagnosticStatus.WARN, f"recent error: {snapshot.get('last_error', '')}"[:200]
    return DiagnosticStatus.OK, (
        f"{snapshot.get('output_rate_hz', 0):.2f} Hz out of {snapshot.get('input_rate_hz', 0):.2f} Hz in"
    )


def diagnostic_array(snapshot: dict[str, Any], stamp: Any, name: str, hardware_id: str,
                     extra: dict[str, Any] | None = None) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    status = DiagnosticStatus()
    status.name = name
    status.hardware_id = hardware_id
    status.level, status.message = status_level(snapshot)
    if extra and extra.get("enabled") is False:  # paused on purpose: not a fault
        status.level, status.message = DiagnosticStatus.OK, "paused (~/enable false): frames are not segmented"
    values = dict(snapshot)
    if extra:
        values.update(extra)
    status.values = [KeyValue(key=str(k), value="" if v is None else str(v)) for k, v in values.items()]
    msg.status = [status]
    return msg


def cameras_diagnostics(cameras, stamp: Any, node_name: str, hardware_id: str, mode: str,
                        enabled: bool) -> DiagnosticArray:
    """The segment node's /diagnostics: one status per camera (ros/camera.py), named
    "<node>: segmentation[ <camera>]"."""
    out = DiagnosticArray()
    out.header.stamp = stamp
    for cam in cameras:
        snapshot = cam.stats.snapshot()
        counts = cam.prompts.counts()
        extra = {
            "image_topic": cam.image_topic,
            "image_reliability": (cam.images.reliability if cam.images is not None else None)
            or "waiting for a publisher",
            "mode": mode,
            "enabled": enabled,
            "active_points": counts["points"],
            "active_boxes": counts["boxes"],
        }
        tracker = cam.segmenter.tracker
        if tracker is not None:
            extra.update(tracker.counts())  # read from another thread: plain ints, a snapshot is good enough
        if cam.depth3d is not None:
            extra.update(cam.depth3d.diagnostics())
        name = f"{node_name}: segmentation" + (f" {cam.name}" if cam.name else "")
        out.status += diagnostic_array(snapshot, stamp, name, hardware_id, extra).status
    return out
