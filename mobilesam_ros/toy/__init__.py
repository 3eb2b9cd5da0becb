"""The toy world: procedural scenes with known truth, and a MobileSAM trained on them.

``scenes`` draws seeded scenes of solid shapes with exact masks; ``model`` assembles
the toy-world checkpoint (seeded encoder + shipped trained tensors); ``train`` and
``evaluate`` are the programs that made and measure it. Nothing here is imported
on the runtime path.
"""
