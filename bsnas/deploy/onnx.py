"""A model as an ONNX file, checked the way a deployment needs it, and its latency under onnxruntime.

The file is exported with torch's maintained exporter (`torch.onnx.export(dynamo=True)`), from the model with
every BatchNorm that follows a convolution folded into it (`fold_batchnorm`; the input BatchNorm stays, since
folding it into a zero-padded convolution would change the border pixels). It must pass `onnx.checker` (full
check) and give onnxruntime outputs within `TOLERANCE` of PyTorch's on seeded random inputs; otherwise nothing
is written. onnx, onnxscript and onnxruntime are the optional extra `bsnas[onnx]`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bsnas.errors import BsnasError
from bsnas.nn.fold import fold_batchnorm
from bsnas.nn.profile import LatencyResult, median_ms
from bsnas.text import plural

__all__ = ["OPSET", "TOLERANCE", "OnnxCheck", "check_onnx", "export_onnx", "export_onnx_bytes", "measure_onnx_latency",
           "onnx_bytes", "onnx_session", "require_onnx"]

OPSET = 18
TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| allowed, relative to the largest |PyTorch output|
_EXTRA = "pip install 'bsnas[onnx]'"


def require_onnx() -> None:
    """Import the optional ONNX packages, or say which extra installs them."""
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise BsnasError(f"ONNX export and onnxruntime latency need {', '.join(missing)}: {_EXTRA}.")


@dataclass(frozen=True)
class OnnxCheck:
    """What was verified on an exported file."""

    checker: bool  # onnx.checker.check_model(full_check=True) passed
    max_abs_diff: float  # max |onnxruntime - PyTorch| over the test inputs
    largest: float  # max |PyTorch output| over the test inputs
    inputs: int  # images compared

    @property
    def allowed(self) -> float:
        """TOLERANCE x the largest |output| (untrained zoo models have logits of 1e-13 .. 1e-1; float32 rounding
        keeps onnxruntime within ~1e-6 of them, relative)."""
        return TOLERANCE * self.largest

    @property
    def relative(self) -> float:
        """max |onnxruntime - PyTorch| as a share of the largest |logit| (what `TOLERANCE` bounds)."""
        if self.max_abs_diff == 0:
            return 0.0
        return self.max_abs_diff / self.largest if self.largest else math.inf

    @property
    def ok(self) -> bool:
        return self.checker and self.max_abs_diff <= self.allowed

    def summary(self) -> str:
        """e.g. `onnx.checker passed; onnxruntime matches PyTorch on 4 random images to 2.4e-07 of the largest logit
        (allowed 1e-04)`."""
        agrees = "matches PyTorch" if self.max_abs_diff <= self.allowed else "differs from PyTorch"
        return (f"onnx.checker {'passed' if self.checker else 'FAILED'}; onnxruntime {agrees} on "
                f"{plural(self.inputs, 'random image')} {'to' if agrees.startswith('m') else 'by'} "
                f"{self.relative:.1e} of the largest logit (allowed {TOLERANCE:.0e})")


def onnx_bytes(model: nn.Module, input_size: tuple[int, int, int], batch_size: int | None = None) -> bytes:
    """The serialized ONNX model of `model` (put in eval mode; exported with BatchNorm folded) for images of
    `input_size` (C, H, W); `batch_size` None gives a dynamic batch dimension named `batch`."""
    example = torch.randn(batch_size or 2, *input_size)
    dynamic = None if batch_size else ({0: torch.export.Dim("batch", min=1)},)
    return export_onnx_bytes(model, (example,), ["input"], ["logits"], dynamic)


def export_onnx_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
                      output_names: list[str], dynamic_shapes=None) -> bytes:
    """`model` (put in eval mode, BatchNorm folded) exported for `inputs` with the maintained exporter, serialized;
    the graph's inputs and outputs take the names given."""
    require_onnx()
    model = fold_batchnorm(model)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter's progress lines
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(model, inputs, dynamo=True, opset_version=OPSET, input_names=input_names,
                                        output_names=output_names, dynamic_shapes=dynamic_shapes, optimize=True)
        except Exception as error:  # the exporter raises its own types; say it in one line
            raise BsnasError(f"ONNX export failed: {str(error).splitlines()[0] if str(error) else error!r}") from None
    return program.model_proto.SerializeToString()


def check_onnx(data: bytes, model: nn.Module, input_size: tuple[int, int, int], batch_size: int | None = None,
               seed: int = 0) -> OnnxCheck:
    """Run `onnx.checker` on the serialized model and compare onnxruntime's outputs with `model`'s on seeded
    random images (two batches: 1 and 3 images for a dynamic batch, else one batch of `batch_size`)."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
        checker = True
    except onnx.checker.ValidationError:
        checker = False
    session = onnx_session(data, threads=1)
    generator = torch.Generator().manual_seed(seed)
    model = model.eval()
    worst, largest, count = 0.0, 0.0, 0
    for batch in ((batch_size,) if batch_size else (1, 3)):
        images = torch.randn(batch, *input_size, generator=generator)
        with torch.no_grad():
            expected = model(images)
        got = torch.from_numpy(session.run(None, {"input": images.numpy()})[0])
        worst = max(worst, (got - expected).abs().max().item())
        largest = max(largest, expected.abs().max().item())
        count += batch
    return OnnxCheck(checker, worst, largest, count)


def export_onnx(model: nn.Module, input_size: tuple[int, int, int], path: str | Path,
                batch_size: int | None = None) -> OnnxCheck:
    """Export `model` to `path` (see the module docstring) and verify it; a file that fails its checks is not
    written (BsnasError with the figures)."""
    data = onnx_bytes(model, input_size, batch_size)
    check = check_onnx(data, model, input_size, batch_size)
    if not check.ok:
        raise BsnasError(f"{path}: not written: {check.summary()}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return check


def onnx_session(data: bytes, threads: int):
    """An onnxruntime CPU session of a serialized model as a deployment runs it: `threads` intra-op threads, all
    graph optimisations."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def measure_onnx_latency(model: nn.Module | bytes, input_size: tuple[int, int, int], batch_size: int = 1,
                         threads: int = 1, warmup: int = 5, repeats: int = 20) -> LatencyResult:
    """Median wall-clock milliseconds of one onnxruntime run (CPU, `threads` intra-op threads, all graph
    optimisations) on a batch of `batch_size`, after `warmup` runs; `model` is a module or serialized ONNX."""
    data = model if isinstance(model, bytes) else onnx_bytes(model, input_size)
    session = onnx_session(data, threads)
    feed = {"input": torch.randn(batch_size, *input_size).numpy()}
    median = median_ms(lambda: session.run(None, feed), warmup, repeats)
    return LatencyResult(batch_size, median, repeats, "cpu", threads, backend="onnxruntime")


def export_run(run_dir: str | Path, output: str | Path | None = None,
               batch_size: int | None = None) -> tuple[Path, OnnxCheck]:
    """Export the trained model of a training run's checkpoint (default `<run_dir>/model.onnx`), verified."""
    from bsnas.train.rundir import load_checkpoint, load_model

    checkpoint = load_checkpoint(run_dir)
    model = load_model(checkpoint)
    output = Path(output) if output else Path(run_dir) / "model.onnx"
    return output, export_onnx(model, model.spec.input_size, output, batch_size)
