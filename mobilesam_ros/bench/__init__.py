"""The benchmarks, one home: ``model`` (encoder, decoder, masks; optionally against
the reference predictor) and ``everything`` (the segment-everything strategies).
``mobilesam-ros bench`` runs them; ``scripts/bench_ros.py`` measures the node over DDS.
"""
