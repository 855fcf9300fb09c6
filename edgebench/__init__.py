"""edgebench: export PyTorch models to edge devices and benchmark them honestly.

    import edgebench
    artifact = edgebench.export(module, example_inputs, format="tflite", precision="int8", eval=(x, y))
    record = edgebench.bench(artifact, device="local", eval=(x, y))
    edgebench.report([record], out="out/report")
"""
__version__ = "0.2.0"

from edgebench import export  # noqa: E402  (the package is callable: edgebench.export(module, ...))
from edgebench.api import bench, describe, report  # noqa: E402

__all__ = ["export", "bench", "describe", "report", "__version__"]
