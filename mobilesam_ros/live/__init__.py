"""The live pipeline: streams of frames and prompts, no ROS.

``frames`` (message pixels -> RGB, the newest-frame slot), ``prompts`` (what to
segment and for how long), ``segmenter`` (one frame through the predictor, and the
worker thread that serves the newest frame), ``config`` (every node parameter, once:
declaration, validation, YAML), ``stats`` (rates, latencies, error counts for
/diagnostics), ``depth`` (objects in 3D from an aligned depth image; pairing depth
with colour frames by stamp). The ROS node in :mod:`mobilesam_ros.ros` only converts messages and
calls these.
"""
