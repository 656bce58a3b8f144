"""What a command's SOURCE argument names: a training run (its folder, or its name under --runs-dir), a checkpoint
file, a zoo name or an ArchSpec YAML file (the last two untrained). `bsnas export` and `bsnas analyze` read it
here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsnas.arch.spec import ArchSpec
from bsnas.errors import BsnasError
from bsnas.names import is_name
from bsnas.text import plural

__all__ = ["ModelSource", "is_run_name", "refuse_overrides", "resolve_source", "source_folder"]


@dataclass(frozen=True)
class ModelSource:
    """The spec SOURCE names, the checkpoint with its trained weights (None: untrained), the training run's folder
    (None for a checkpoint file, zoo name or YAML file) and a note on where it came from."""

    spec: ArchSpec
    checkpoint: dict[str, Any] | None
    folder: Path | None
    note: str


def is_run_name(text: str) -> bool:
    """Whether `text` could name a run under --runs-dir (and is not a YAML file name)."""
    return is_name(text) and not text.endswith((".yaml", ".yml"))


def source_folder(source: str, runs_dir: str | Path) -> Path | None:
    """The folder SOURCE names: itself when it is one, else the run of that name under `runs_dir` when it exists."""
    from bsnas.train.rundir import run_path

    if Path(source).is_dir():
        return Path(source)
    if is_run_name(source) and (candidate := run_path(runs_dir, source)).is_dir():
        return candidate
    return None


def refuse_overrides(source: str, what: str, num_classes: int | None, in_channels: int | None) -> None:
    """--num-classes and --in-channels change a YAML file's or zoo name's architecture, never a trained one's."""
    if num_classes is not None or in_channels is not None:
        raise BsnasError(f"--num-classes and --in-channels apply to a YAML file or zoo name; {source!r} is "
                         f"{what}, whose architecture is fixed.")


def resolve_source(source: str, runs_dir: str | Path, num_classes: int | None = None,
                   in_channels: int | None = None) -> ModelSource:
    """The model SOURCE names; `num_classes` and `in_channels` override a YAML file's or zoo name's."""
    from bsnas.arch.zoo import resolve_spec
    from bsnas.train.rundir import check_checkpoint, load_checkpoint

    folder = source_folder(source, runs_dir)
    if folder is not None or Path(source).suffix in (".pt", ".pth"):
        checkpoint = load_checkpoint(folder or source)
        spec = check_checkpoint(checkpoint, folder / "checkpoint.pt" if folder is not None else source)[0]
        refuse_overrides(source, "a training run", num_classes, in_channels)
        history = checkpoint["history"]
        accuracy = f", val accuracy {history[-1]['val_accuracy']:.2%}" if history else ""
        return ModelSource(spec, checkpoint, folder,
                           f"{spec.name} trained {plural(checkpoint['epoch'], 'epoch')}{accuracy}")
    try:
        spec = resolve_spec(source, num_classes, in_channels)
    except BsnasError as error:
        if not is_run_name(source):
            raise
        reason = str(error).splitlines()[0].removesuffix("; valid names follow this grammar:")
        raise BsnasError(f"{source!r} is neither a run in {runs_dir}/ nor a zoo name ({reason}; `bsnas zoo list` "
                         "shows the names)") from None
    return ModelSource(spec, None, None, f"{spec.name} at {'x'.join(map(str, spec.input_size))}")
