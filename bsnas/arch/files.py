"""Reading and writing YAML files of bsnas (architectures, search spaces), defensively.

Files are read with `yaml.safe_load` only, after checks that keep hostile input cheap: at most
`MAX_YAML_BYTES`, UTF-8 text, no aliases (a few lines of nested aliases expand to gigabytes), nested at most
`MAX_YAML_DEPTH` deep (PyYAML's scanner takes time quadratic in the depth: a 1 MB file of nested `[` took 19
minutes to refuse). The checks walk the parser's events and stop at the first offence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bsnas.arch.spec import ArchSpec, spec_to_yaml
from bsnas.arch.validate import spec_from_dict
from bsnas.errors import BsnasError, shown

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "read_yaml", "load_spec", "save_spec"]

MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32  # collections inside collections; specs and spaces need 4


def read_yaml(path: str | Path, what: str) -> Any:
    """`yaml.safe_load` of a file; anything unreadable is a BsnasError naming the file and `what` it is."""
    path = Path(path)
    name = shown(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise BsnasError(f"{name}: {path.stat().st_size:,} bytes is too large for a {what} file "
                             f"(at most {MAX_YAML_BYTES:,}).")
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise BsnasError(f"{name}: cannot read the {what} file ({error.strerror}).") from None
    except UnicodeDecodeError:
        raise BsnasError(f"{name}: not UTF-8 text; a {what} file is a YAML mapping.") from None
    try:
        _check_events(text, name, what)
        return yaml.safe_load(text)
    except BsnasError:
        raise
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BsnasError(f"{name}: not valid YAML{where}; a {what} file is a YAML mapping.") from None
    except ValueError as error:  # a value the constructor cannot make: a 5000-digit integer, the date 2024-13-45
        raise BsnasError(f"{name}: holds a value that cannot be read ({str(error).split(';')[0]}).") from None


def _check_events(text: str, name: str, what: str) -> None:
    """Refuse aliases and nesting deeper than `MAX_YAML_DEPTH`, as the parser's events arrive."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise BsnasError(f"{name}: YAML aliases (*name) are not allowed in a {what} file; write the values out.")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise BsnasError(f"{name}: nested more than {MAX_YAML_DEPTH} deep at line "
                                 f"{event.start_mark.line + 1}; {what} files are YAML mappings a few levels deep.")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_spec(path: str | Path) -> ArchSpec:
    """Read and validate a spec YAML file; errors name the file and the field."""
    return spec_from_dict(read_yaml(path, "architecture"), source=shown(path))


def save_spec(spec: ArchSpec, path: str | Path) -> Path:
    """Write the spec as YAML to `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec_to_yaml(spec))
    return path
