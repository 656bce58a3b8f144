"""Reading search spaces: YAML files (or the shipped ones, by name) validated into a `SearchSpace`.

Every field is either a fixed value, a list of choices, or a range `{low: .., high: .., step: .., log: ..}`;
any field may carry a condition `{choices: [...], when: {field: value-or-list}}` and is then sampled only
when the condition holds (its default applies otherwise). Errors name the file and the field, in one line.
The shipped spaces (`mobilenet`, `resnet`) live in the package (`bsnas/spaces/`; `search_spaces/` in the
repository is the same folder), so `--space mobilenet` works from any directory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from bsnas.arch.files import read_yaml
from bsnas.arch.spec import ACTIVATIONS, BLOCK_TYPES, KERNEL_SIZES, OPS
from bsnas.arch.validate import MAX_BLOCKS, MAX_CHANNELS, FieldChecker, field_name
from bsnas.errors import BsnasError, shown
from bsnas.names import NAME_LENGTH, is_name, name_from, name_rule
from bsnas.space.choices import Choice, show_value
from bsnas.space.decode import BLOCK_FIELDS, HEAD_FIELDS, MODEL_FIELDS, STEM_FIELDS, SearchSpace, StageSpace

__all__ = ["SPACE_FORMAT_VERSION", "SHIPPED_SPACES", "load_space", "resolve_space", "shipped_space_path",
           "space_from_dict"]

SPACE_FORMAT_VERSION = 1
FAMILIES = ("mobilenet", "resnet")
SHIPPED_SPACES = ("mobilenet", "resnet")
MAX_REPEATS = 64  # blocks of one stage
MAX_MULTIPLIER = 64.0  # width multipliers and expansions
SPACE_NAME_LENGTH = NAME_LENGTH - len("_t") - 8  # its trials are named <name>_t<N> (N < 10**8): names by the rule
_TOP_KEYS = ("format_version", "name", "family", "description", "model", "stem", "stages", "head")
_STAGE_KEYS = ("stride", "repeats", "padding_free", *BLOCK_FIELDS)


class _Checker(FieldChecker):
    """Field checks of search-space values; an omitted (null) section is an empty mapping."""

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict:
        return {} if value is None else super().mapping(value, where, allowed)

    def value(self, value: Any, where: str, kind: str) -> Any:
        """Check one candidate value of a field of the given kind."""
        if kind == "op":
            allowed = OPS
        elif kind == "act":
            allowed = ACTIVATIONS
        elif kind == "act_or_null":
            allowed = (*ACTIVATIONS, None)
        elif kind == "kernel":
            allowed = KERNEL_SIZES
        elif kind == "stride":
            allowed = (1, 2)
        elif kind == "block_type":
            allowed = BLOCK_TYPES
        elif kind == "bool":
            if not isinstance(value, bool):
                self.fail(where, f"{value!r} is not true or false")
            return value
        elif kind in ("channels", "channels_or_null"):
            if value is None and kind == "channels_or_null":
                return None
            return self.integer(value, where, maximum=MAX_CHANNELS)
        elif kind == "positive":
            if isinstance(value, str) and "/" in value:
                try:
                    value = float(Fraction(value))
                except (ValueError, ZeroDivisionError, OverflowError):
                    self.fail(where, f"{value!r} is not a number or a fraction such as 11/3")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_MULTIPLIER:
                self.fail(where, f"{value!r} is not a number in (0, {MAX_MULTIPLIER:g}]")
            return value
        elif kind == "ratio":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                self.fail(where, f"{value!r} is not a number in (0, 1]")
            return float(value)
        elif kind == "alpha":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                self.fail(where, f"{value!r} is not a finite number >= 0")
            return float(value)
        else:  # pragma: no cover - programming error
            raise AssertionError(kind)
        if not any(type(value) is type(option) and value == option for option in allowed):
            names = ", ".join(show_value(a) for a in allowed)
            self.fail(where, f"{value!r} is not one of {names}")
        return value

    def choice(self, data: Any, where: str, kind: str, earlier: tuple[str, ...]) -> Choice:
        """A fixed value, a list, a range mapping, or `{choices|low/high.., when: {...}}`."""
        when: tuple = ()
        if isinstance(data, dict) and ("choices" in data or "when" in data or "low" in data):
            allowed = ("choices", "low", "high", "step", "log", "when")
            self.mapping(data, where, allowed)
            if "when" in data:
                when = self.condition(data["when"], f"{where}.when", earlier)
            if "choices" in data:
                if "low" in data or "high" in data:
                    self.fail(where, "give either choices or low/high, not both")
                choice = self.choice(data["choices"], where, kind, earlier)
            elif "low" in data:
                choice = self.range(data, where, kind)
            else:
                self.fail(where, "a conditional field needs choices or low/high besides when")
            return dataclasses.replace(choice, when=when)
        if isinstance(data, list):
            if not data:
                self.fail(where, "an empty list of choices; give at least one value")
            values = tuple(self.value(v, f"{where}[{i}]", kind) for i, v in enumerate(data))
            if len(set(map(repr, values))) != len(values):
                self.fail(where, "a choice is listed twice")
            return Choice(values=values)
        if isinstance(data, dict):
            self.fail(where, "a range needs low and high (and optionally step, log)")
        return Choice(values=(self.value(data, where, kind),))

    def range(self, data: dict, where: str, kind: str) -> Choice:
        if kind not in ("positive", "ratio", "alpha", "channels"):
            self.fail(where, "a range (low/high) is allowed only for numeric fields; give a list instead")
        if "high" not in data:
            self.fail(f"{where}.high", "missing; a range needs low and high")
        low = self.value(data["low"], f"{where}.low", kind) if not (kind == "alpha" and data["low"] == 0) else 0.0
        high = self.value(data["high"], f"{where}.high", kind)
        step = data.get("step")
        log = data.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{where}.log", f"{log!r} is not true or false")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            self.fail(f"{where}.step", f"{step!r} is not a number > 0")
        if high < low:
            self.fail(where, f"high {high!r} is below low {low!r}")
        if log and step is not None:
            self.fail(where, "a log range takes no step")
        if log and low <= 0:
            self.fail(f"{where}.low", "a log range needs low > 0")
        if kind == "channels" and not all(isinstance(v, int) for v in (low, high, step or 1)):
            self.fail(where, "a channel range needs integer low, high and step")
        return Choice(low=low, high=high, step=step, log=log)

    def condition(self, data: Any, where: str, earlier: tuple[str, ...]) -> tuple:
        if not isinstance(data, dict) or not data:
            self.fail(where, "expected a mapping such as {op: bsconv_s}")
        items = []
        for key, allowed in data.items():
            if key not in earlier:
                self.fail(f"{where}.{field_name(key)}",
                          f"a condition may refer to earlier fields only: {', '.join(earlier)}")
            items.append((key, tuple(allowed) if isinstance(allowed, list) else (allowed,)))
        return tuple(items)


def _int_repeats(check: _Checker, data: Any, where: str) -> Choice:
    if isinstance(data, dict):
        check.mapping(data, where, ("low", "high"))
        for key in ("low", "high"):
            check.integer(data.get(key), f"{where}.{key}", minimum=0, maximum=MAX_REPEATS)
        if data["high"] < data["low"]:
            check.fail(where, f"high {data['high']} is below low {data['low']}")
        return Choice(low=data["low"], high=data["high"])
    values = data if isinstance(data, list) else [data]
    for i, value in enumerate(values):
        check.integer(value, f"{where}[{i}]" if isinstance(data, list) else where, minimum=0, maximum=MAX_REPEATS)
    if not values:
        check.fail(where, "an empty list of choices; give at least one value")
    return Choice(values=tuple(sorted(set(values))))


def _fields(check: _Checker, data: dict, where: str, table: dict[str, tuple[str, Any]], context: tuple[str, ...],
            required: tuple[str, ...] = ()) -> tuple[dict[str, Choice], set[str]]:
    result, explicit = {}, set()
    earlier = list(context)
    for key, (kind, default) in table.items():
        if key in data:
            result[key] = check.choice(data[key], f"{where}.{key}", kind, tuple(earlier))
            explicit.add(key)
        elif key in required:
            check.fail(f"{where}.{key}", "missing; it is required here")
        else:
            result[key] = Choice(values=(default,))
        earlier.append(key)
    return result, explicit


def space_from_dict(data: Any, source: str = "<space>") -> SearchSpace:
    """Validate a plain dict (e.g. from YAML) and return the SearchSpace; errors name the source and the field."""
    check = _Checker(source)
    if not isinstance(data, dict):
        check.fail("top level", f"expected a mapping with keys {', '.join(_TOP_KEYS)}")
    check.mapping(data, "", _TOP_KEYS)
    version = data.get("format_version", SPACE_FORMAT_VERSION)
    if type(version) is not int or version != SPACE_FORMAT_VERSION:
        check.fail("format_version", f"{version!r} is not supported; this bsnas reads version {SPACE_FORMAT_VERSION}")
    name = data.get("name", name_from(Path(source).stem, SPACE_NAME_LENGTH))
    if not is_name(name, SPACE_NAME_LENGTH):
        check.fail("name", f"{name!r} is not {name_rule(SPACE_NAME_LENGTH)} (its trials are named <name>_t<N>, "
                           "and trial names become file names)")
    family = data.get("family")
    if family is not None and family not in FAMILIES:
        check.fail("family", f"{family!r} is not one of {', '.join(FAMILIES)}, null")

    model_data = check.mapping(data.get("model"), "model", tuple(MODEL_FIELDS))
    if "block_type" not in model_data:
        check.fail("model.block_type", f"missing; give one or a list of {', '.join(BLOCK_TYPES)}")
    model, _ = _fields(check, model_data, "model", MODEL_FIELDS, ())
    for key in ("block_type", "width_multiplier"):
        if model[key].when:
            check.fail(f"model.{key}", "model-level choices take no condition")
    if model["block_type"].is_range:
        check.fail("model.block_type", "expected a block type or a list of them")
    inverted_possible = "inverted" in model["block_type"].values
    plain_possible = any(t != "inverted" for t in model["block_type"].values)

    if "stem" not in data:
        check.fail("stem", "missing; a space needs stem, stages and head")
    stem_data = check.mapping(data["stem"], "stem", tuple(STEM_FIELDS))
    stem, _ = _fields(check, stem_data, "stem", STEM_FIELDS, ("block_type", "width_multiplier"),
                      required=("out_channels",))
    if stem["out_channels"].is_range and not stem["out_channels"].is_int:
        check.fail("stem.out_channels", "a channel range needs integers")
    if "bsconv_s" in (stem["op"].values or ()) and "p" not in stem_data:
        check.fail("stem.p", "needed because stem.op may be bsconv_s")

    stages_data = data.get("stages")
    if not isinstance(stages_data, list) or not stages_data:
        check.fail("stages", "expected a non-empty list of stages")
    stages = []
    for s, stage_data in enumerate(stages_data):
        where = f"stages[{s}]"
        stage_data = check.mapping(stage_data, where, _STAGE_KEYS)
        for key in ("repeats", "out_channels", "op"):
            if key not in stage_data:
                check.fail(f"{where}.{key}", "missing; every stage needs repeats, op and out_channels")
        stride = check.value(stage_data.get("stride", 1), f"{where}.stride", "stride")
        repeats = _int_repeats(check, stage_data["repeats"], f"{where}.repeats")
        fields_, explicit = _fields(check, stage_data, where, BLOCK_FIELDS, ("block_type", "width_multiplier"))
        padding_free = check.choice(stage_data.get("padding_free", False), f"{where}.padding_free", "bool",
                                    ("block_type", "width_multiplier", *BLOCK_FIELDS))
        if stride != 2 and "padding_free" in stage_data and padding_free.values != (False,):
            check.fail(f"{where}.padding_free", "applies only to stride-2 stages")
        if inverted_possible and "expansion" not in stage_data:
            check.fail(f"{where}.expansion", "missing; needed because model.block_type may be inverted")
        ops = fields_["op"].values or ()
        if plain_possible and "bsconv_s" in ops and "p" not in stage_data:
            check.fail(f"{where}.p", "needed because op may be bsconv_s (the p of BSConv-S, in (0, 1])")
        if fields_["expansion"].is_range and not fields_["expansion"].step:
            check.fail(f"{where}.expansion", "give a list of expansions (a continuous range cannot hold "
                       "the zoo's exact widths)")
        stages.append(StageSpace(stride, repeats, padding_free, fields_, frozenset(explicit)))
    if all(max(stage.repeats.enumerate()) == 0 for stage in stages):
        check.fail("stages", "every stage has repeats 0; a point needs at least one block")
    if sum(max(stage.repeats.enumerate()) for stage in stages) > MAX_BLOCKS:
        check.fail("stages", f"the stages' repeats allow more than {MAX_BLOCKS} blocks")

    head_data = check.mapping(data.get("head"), "head", tuple(HEAD_FIELDS))
    head, _ = _fields(check, head_data, "head", HEAD_FIELDS, ("block_type", "width_multiplier"))
    description = data.get("description", "")
    if not isinstance(description, str):
        check.fail("description", f"{description!r} is not a string")
    return SearchSpace(name=name, family=family, model=model, stem=stem, stages=tuple(stages), head=head,
                       description=description.strip(), source=source, raw=copy.deepcopy(data))


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; errors name the file and the field."""
    return space_from_dict(read_yaml(path, "search-space"), source=shown(path))


def shipped_space_path(name: str) -> Path:
    """The file of a space shipped with bsnas (`mobilenet`, `resnet`)."""
    return Path(str(resources.files("bsnas") / "spaces" / f"{name}.yaml"))


def resolve_space(name_or_path: str) -> SearchSpace:
    """`--space`: a YAML file, or the name of a shipped space."""
    path = Path(name_or_path)
    if name_or_path in SHIPPED_SPACES and not path.exists():
        return load_space(shipped_space_path(name_or_path))
    if not path.exists() and path.suffix not in (".yaml", ".yml"):
        raise BsnasError(f"--space {name_or_path!r} is neither a file nor a shipped space "
                         f"({', '.join(SHIPPED_SPACES)}).")
    return load_space(path)
