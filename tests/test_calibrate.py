"""`bsnas calibrate`: rank correlations (hand-checked) and a tiny resumable run through the CLI."""

from __future__ import annotations

import csv
import math

import pytest

from bsnas.cli import main
from bsnas.search.ranking import kendall_tau, spearman_rho


@pytest.mark.parametrize(("x", "y", "tau", "rho"), [
    ([1, 2, 3, 4], [1, 2, 3, 4], 1.0, 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0, -1.0),
    ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], 0.6, 0.8),  # two swaps: 8 concordant, 2 discordant pairs
    ([1, 2, 2, 3], [1, 2, 3, 4], 5 / math.sqrt(30), 0.9486832980505138),  # a tie in x: tau-b, average ranks
])
def test_rank_correlations_by_hand(x, y, tau, rho):
    assert kendall_tau(x, y) == pytest.approx(tau)
    assert spearman_rho(x, y) == pytest.approx(rho)


def test_no_spread_is_no_correlation():
    assert math.isnan(spearman_rho([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau([1, 1], [1, 1]))


def test_a_calibration_runs_resumes_and_writes_its_table(tmp_path, capsys):
    argv = ["calibrate", "--dataset", "synthetic", "--budget", "2MFLOPs", "--candidates", "5", "--rungs", "2",
            "--reference-epochs", "1", "--proxy-images", "64", "--workers", "1", "--runs-dir", str(tmp_path),
            "--zoo", "v3_small_w7d20$"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err.rstrip().endswith("rung 0 6/6, rung 1 6/6, reference 6/6")  # the progress line, last when done
    assert "Spearman rho" in out and "rung1" in out and "flops" in out and "predictor" in out
    with open(tmp_path / "calibrate" / "calibrate.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 and all(row["rung0"] and row["rung1"] and row["reference"] for row in rows)
    assert any(row["name"] == "cifar_mobilenetv3_small_w7d20" for row in rows)
    def trainings():
        import optuna

        url = f"sqlite:///{tmp_path / 'calibrate' / 'calibrate.db'}"
        return {s.study_name: len(optuna.load_study(study_name=s.study_name, storage=url).trials)
                for s in optuna.get_all_study_summaries(url)}

    before = trainings()
    assert sorted(before) == ["calibrate.reference", "calibrate.rung0", "calibrate.rung1"]
    assert main(argv) == 0  # resumed: everything is there, nothing is queued or trained again
    assert trainings() == before
    assert (tmp_path / "calibrate" / "calibrate.png").read_bytes()[:4] == b"\x89PNG"
    changed = main([*argv, "--no-augment"])  # the rungs were trained with augmentation (the default with rungs)
    assert changed == 2 and "calibrate.rung0 were made with other settings (crop_padding 4, now 0" in \
        capsys.readouterr().err
    assert trainings() == before
