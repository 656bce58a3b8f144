"""Deployment: ONNX files verified with onnxruntime, and their latency."""
