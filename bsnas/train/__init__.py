"""Training: datasets in memory, batched augmentation, one readable loop, resumable run directories.

`DataConfig` -> `load_data` -> `DataSplits`; `TrainConfig` (or a preset) + a model -> `train` -> `TrainResult`;
`bsnas.train.rundir` writes runs/<RUN>/ and resumes it. Nothing here knows of the search.
"""

from __future__ import annotations

from bsnas.train.config import PRESETS, TrainConfig, preset
from bsnas.train.data import DataConfig, DataSplits, load_data
from bsnas.train.loop import TrainResult, train

__all__ = ["PRESETS", "DataConfig", "DataSplits", "TrainConfig", "TrainResult", "load_data", "preset", "train"]
