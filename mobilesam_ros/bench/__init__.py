"""The benchmarks, one home: ``model`` (encoder, decoder, masks; optionally against
the reference predictor), ``everything`` (the segment-everything strategies) and
``tracking`` (the tracker's cost per frame and how well it follows, on scenes with known truth).
``mobilesam-ros bench`` runs them; ``scripts/bench_ros.py`` measures the node over DDS.
"""
