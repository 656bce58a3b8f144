"""A latency lookup table: measured once per machine, backend and threads; a network's latency is the sum over its
plan's entries plus a per-model overhead (FBNet, MCUNet), in microseconds, without building or exporting it.

The file is JSON Lines, written as the build goes (a killed build keeps every line it wrote; a torn last line is
ignored): a header with the format, the machine `key` (what the times depend on: CPU model, cores, Python, torch,
onnxruntime for its backend, the backend and the threads), the granularity and the timing settings; then one line
per entry (`{"entry": KEY, "us": TIME}`, KEY the entry's canonical JSON, `bsnas.latency.entries.entry_key`); a
`covers` line per finished build (the space, its input, the budget it was built within); a `calibration` line with
whole networks measured beside their sums. The overhead is fitted on those networks (`fit_overhead`).

A table used on another machine, backend or thread count is refused with one line naming what differs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from importlib import metadata
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsnas.arch.plan import Plan, plan
from bsnas.errors import BsnasError, shown
from bsnas.latency.entries import describe_entry, entry_key, network_entries

if TYPE_CHECKING:
    from bsnas.arch.spec import ArchSpec
    from bsnas.search.budget import Budget
    from bsnas.space.decode import SearchSpace

__all__ = ["FORMAT", "FIT", "LatencyTable", "append_records", "fit_overhead", "load_table", "machine_key",
           "space_digest"]

FORMAT = "bsnas-latency-table"
VERSION = 2  # 2: onnxruntime entries timed between side layers (version 1 timed them alone)
FIT = "offset"  # how the per-model overhead is fitted on the calibration networks: offset | linear | none


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_key(backend: str, threads: int) -> dict[str, Any]:
    """What a table's times depend on, here: the backend, the threads, the CPU (model, cores, architecture), Python,
    torch (and onnxruntime for that backend). Not the host name: two machines of one kind share tables."""
    return {"backend": backend, "threads": threads, "cpu": _cpu_model(), "cores": os.cpu_count(),
            "architecture": platform.machine(), "python": ".".join(platform.python_version_tuple()[:2]),
            "torch": _version("torch"), "onnxruntime": _version("onnxruntime") if backend == "onnxruntime" else None}


def space_digest(space: SearchSpace) -> str:
    """A short digest of a space's file contents (what `covers` records)."""
    text = json.dumps(space.raw, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _theil_sen(points: list[tuple[float, float]]) -> tuple[float, float]:
    slopes = [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in combinations(points, 2) if x2 != x1]
    scale = statistics.median(slopes) if slopes else 1.0
    return statistics.median(y - scale * x for x, y in points), scale


def fit_overhead(points: list[tuple[float, float]], method: str = FIT) -> tuple[float, float]:
    """(overhead_us, scale) such that measured ~ overhead + scale * sum, from (sum, measured) pairs: `offset` keeps
    the scale at 1 and takes the median difference; `linear` fits both (Theil-Sen: robust to a noisy network);
    `none` is the bare sum."""
    if method == "none" or not points:
        return 0.0, 1.0
    if method == "linear":
        return _theil_sen(points)
    return statistics.median(y - x for x, y in points), 1.0


@dataclass
class LatencyTable:
    """A loaded table (see the module docstring)."""

    path: Path
    key: dict[str, Any]
    granularity: str
    timing: dict[str, int]
    times: dict[str, float] = field(default_factory=dict)
    covers: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.key["backend"]

    @property
    def threads(self) -> int:
        return self.key["threads"]

    def check_key(self, backend: str | None = None, threads: int | None = None) -> None:
        """Refuse the table when it was measured on another machine, or with another backend or thread count than
        the ones given (None: any)."""
        here = machine_key(backend or self.backend, self.threads if threads is None else threads)
        for name, value in here.items():
            if self.key.get(name) != value:
                raise BsnasError(f"{shown(self.path)}: the latency table was measured with {name} "
                                 f"{self.key.get(name)!r}, but here {name} is {value!r}; build one for this "
                                 f"machine with `bsnas latency build --backend {here['backend']} --threads "
                                 f"{here['threads']}`.")

    def check_covers(self, space: SearchSpace, budgets: tuple[Budget, ...] = ()) -> None:
        """Refuse the table unless a finished build measured every layer of the points of `space` (at its input
        size and classes) within `budgets`' FLOPs and parameter limits."""
        limits = {kind: min((b.limit for b in budgets if b.kind == kind), default=None) for kind in ("flops", "params")}
        wanted = {"digest": space_digest(space), "input_size": list(space.input_size),
                  "num_classes": space.num_classes}

        def enough(record: dict, kind: str) -> bool:
            built = record.get(f"max_{kind}")
            return built is None or (limits[kind] is not None and limits[kind] <= built)

        if any(all(record.get(k) == v for k, v in wanted.items()) and enough(record, "flops")
               and enough(record, "params") for record in self.covers):
            return
        size = "x".join(map(str, space.input_size))
        budget = " ".join(f"--budget {b}" for b in budgets if b.kind != "latency")
        built = "; ".join(_describe_cover(record) for record in self.covers) or "nothing finished yet"
        raise BsnasError(f"{shown(self.path)}: the latency table does not cover space {space.name} at {size} with "
                         f"{space.num_classes} classes{' within ' + budget if budget else ''} (it covers: {built}); "
                         f"add it with `bsnas latency build --space {space.name} --input-size {size} --num-classes "
                         f"{space.num_classes}{' ' + budget if budget else ''} --backend {self.backend} --threads "
                         f"{self.threads} -o {shown(self.path)}`.")

    def sum_us(self, network: Plan, name: str = "the network") -> float:
        """The sum of the entries' times; a missing entry is a BsnasError naming it."""
        entries = network_entries(network, self.granularity)
        try:
            return sum(self.times[entry_key(entry)] for entry in entries)
        except KeyError:
            missing = [entry for entry in entries if entry_key(entry) not in self.times]
            raise BsnasError(f"{shown(self.path)}: no time for {len(missing)} of the {len(entries)} entries of "
                             f"{name} (e.g. {describe_entry(missing[0])}); build the table for its space or for "
                             "the model itself (`bsnas latency build --model ...`).") from None

    @functools.cached_property
    def overhead(self) -> tuple[float, float]:
        """(overhead_us, scale) fitted on the calibration networks (`fit_overhead`)."""
        return fit_overhead([(point["sum_us"], point["measured_us"]) for point in self.calibration])

    def predict_us(self, network: Plan, name: str = "the network") -> float:
        """The predicted latency of one image (batch 1), in microseconds."""
        overhead, scale = self.overhead
        return overhead + scale * self.sum_us(network, name)

    def predict_ms(self, spec: ArchSpec) -> float:
        """The predicted latency of a spec at its input size, in milliseconds (what a latency budget compares)."""
        return self.predict_us(plan(spec), spec.name or "the candidate") / 1000


def _describe_cover(record: dict) -> str:
    if "model" in record:
        return f"model {record['model']}"
    limits = [f"<= {record[f'max_{kind}']:g} {kind}" for kind in ("flops", "params")
              if record.get(f"max_{kind}") is not None]
    size = "x".join(map(str, record.get("input_size", [])))
    return f"space {record.get('space')} at {size}, {record.get('num_classes')} classes{', ' if limits else ''}" \
           f"{', '.join(limits)}"


def load_table(path: str | Path) -> LatencyTable:
    """Read a table file; anything that is not one is a BsnasError naming the file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BsnasError(f"{shown(path)}: cannot read the latency table ({error.strerror}).") from None
    except UnicodeDecodeError:
        raise BsnasError(f"{shown(path)}: not a latency table (not UTF-8 text).") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if number == len(lines) and number > 1:
                break  # the line a killed build was writing
            raise BsnasError(f"{shown(path)}: line {number} is not JSON; not a latency table.") from None
        if not isinstance(record, dict):
            raise BsnasError(f"{shown(path)}: line {number} is not a JSON object; not a latency table.")
        records.append(record)
    if not records or records[0].get("format") != FORMAT:
        raise BsnasError(f"{shown(path)}: not a latency table (its first line is no {FORMAT} header); make one with "
                         "`bsnas latency build`.")
    header = records[0]
    if header.get("version") != VERSION:
        raise BsnasError(f"{shown(path)}: latency table version {header.get('version')!r}; this bsnas reads "
                         f"version {VERSION}: build it again.")
    table = LatencyTable(path, dict(header.get("key", {})), header.get("granularity", "layer"),
                         dict(header.get("timing", {})))
    for number, record in enumerate(records[1:], 2):
        if isinstance(record.get("entry"), str) and isinstance(record.get("us"), (int, float)):
            table.times[record["entry"]] = float(record["us"])
        elif isinstance(record.get("covers"), dict):
            table.covers.append(record["covers"])
        elif isinstance(record.get("calibration"), list):
            table.calibration = record["calibration"]
        else:
            raise BsnasError(f"{shown(path)}: line {number} is neither an entry, a covers nor a calibration record.")
    return table


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records as JSON lines and flush them to the disk (a build killed after this keeps them)."""
    with open(path, "a", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")
        file.flush()
        os.fsync(file.fileno())
