"""edgebench: export PyTorch models to edge devices and benchmark them honestly."""
__version__ = "0.1.0"
