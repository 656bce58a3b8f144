"""Result tables on terminals of 80, 100 and 160 columns: no cell cut, every header whole or its column left out in
the documented order; whole to a pipe and with --wide."""

from __future__ import annotations

import dataclasses
import io
import json

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Console

from bsnas.arch.spec import spec_to_dict
from bsnas.arch.zoo import get_spec
from bsnas.report.tables import front_columns, print_table
from bsnas.search.front import SearchRecord
from bsnas.search.rungs import open_rung_study

FRONT = [  # (trial, architecture, zoo, accuracy at rung 0 and 1, MFLOPs, params)
    (68, "mobilenet_t68", False, 0.52, 0.8802, 5.14, 79_100),
    (11, "cifar_mobilenetv3_large_w1d2_bsconvs_p1d6", True, 0.61, 0.8905, 16.4, 822_000),
    (125, "mobilenet_t125", False, 0.6105, 0.9037, 20.5, 343_000),
    (127, "mobilenet_t127", False, 0.587, 0.911, 60.9, 1_340_000),
]
DROP_ORDER = ["blocks", "proxy acc (rung 0)", "params"]  # the front table's, as documented (FLOPs is the objective)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path_factory.mktemp('t') / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    rungs = [open_rung_study(storage, "s", rung) for rung in range(2)]
    base = get_spec("cifar_mobilenetv3_large_w1d2_bsconvs_p1d6", 10, 1, 28)
    for trial, name, zoo, *accuracies, mflops, params in FRONT:
        spec = json.dumps(spec_to_dict(dataclasses.replace(base, name=name)))
        attrs = {"spec": spec, "spec_hash": name, "trial": trial, "status": "trained", "flops": mflops * 1e6,
                 "params": params, **({"zoo": name} if zoo else {})}
        for rung, accuracy in enumerate(accuracies):
            rungs[rung].add_trial(create_trial(state=TrialState.COMPLETE, values=[accuracy, mflops], user_attrs=attrs))
    return SearchRecord(study, rungs)


def _print(record, width: int, terminal: bool = True, wide: bool = False) -> list[str]:
    stream = io.StringIO()
    console = Console(file=stream, width=width, force_terminal=terminal, color_system=None)
    print_table(console, *front_columns(record), wide=wide)
    return stream.getvalue().splitlines()


def _cells(line: str, rule: str) -> list[str]:
    return [cell.strip() for cell in line.split(rule)[1:-1]]


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_front_table_fits_the_terminal_without_cutting_a_cell(record, width):
    """Issue 25: at 80 columns the architecture column vanished (`┃ tri… ┃┃ val acc (rung …`), at 100 the last column
    and the border were cut."""
    lines = _print(record, width)
    _, columns, rows = front_columns(record)
    assert all(len(line) <= width for line in lines) and not any("…" in line for line in lines)
    headers = _cells(next(line for line in lines if line.startswith("┃")), "┃")
    everything = [column.header for column in columns]
    left_out = [header for header in everything if header not in headers]
    assert set(left_out) == set(DROP_ORDER[:len(left_out)])  # the others whole, in the documented order
    assert headers == [header for header in everything if header not in left_out]
    note = " ".join(lines[lines.index(next(line for line in lines if line.startswith("└"))) + 1:])
    assert note == (f"(left out at {width} columns: {', '.join(left_out)}; --wide shows them)" if left_out else "")
    shown = [everything.index(header) for header in headers]
    body = [_cells(line, "│") for line in lines if line.startswith("│")]
    named = headers.index("architecture")
    starts = [index for index, cells in enumerate(body) if cells[0]]
    assert len(starts) == len(rows)
    for row, start, end in zip(rows, starts, [*starts[1:], len(body)], strict=True):
        for position, index in enumerate(shown):
            if index != everything.index("architecture"):
                assert body[start][position] == row[index]  # whole, on the row's first line
        folded = "".join(cells[named] for cells in body[start:end]).replace(" ", "")
        assert folded == row[everything.index("architecture")].replace(" ", "")  # folded, not cut
    if width == 160:
        assert not left_out


@pytest.mark.parametrize(("terminal", "wide"), [(False, False), (True, True)])
def test_a_pipe_and_wide_get_every_column_at_full_width(record, terminal, wide):
    lines = _print(record, 80, terminal=terminal, wide=wide)
    headers = _cells(next(line for line in lines if line.startswith("┃")), "┃")
    assert headers == [column.header for column in front_columns(record)[1]]
    assert any("cifar_mobilenetv3_large_w1d2_bsconvs_p1d6 (zoo)" in line for line in lines)  # on one line
