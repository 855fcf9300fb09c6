"""Reports: one versioned record type, an SQLite store, and the ONNX-Bench-style report."""
