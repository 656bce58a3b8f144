"""Latency from a lookup table (FBNet, MCUNet): every distinct layer a space can produce, measured once per machine,
backend and threads; a candidate's latency is the sum over its plan plus a per-model overhead, without building,
exporting or timing it.

`entries` (what a network is summed over, read off its plan; no torch) -> `measure` (timing entries in PyTorch
eager or onnxruntime) -> `build` (a space's entries, measured resumably into a file) -> `table` (the file: its
machine key, the sum, the fitted overhead). `bsnas latency build` is the command.
"""

from __future__ import annotations

from bsnas.latency.table import LatencyTable, load_table

__all__ = ["LatencyTable", "load_table"]
