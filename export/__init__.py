"""Export: PyTorch -> ONNX / TFLite artifacts, validated against the reference."""
