"""Deployment: ONNX files verified with onnxruntime, and their latency (needs the `onnx` extra to run)."""

from __future__ import annotations

from bsnas.deploy.onnx import check_onnx, export_onnx, export_run, measure_onnx_latency, require_onnx

__all__ = ["check_onnx", "export_onnx", "export_run", "measure_onnx_latency", "require_onnx"]
