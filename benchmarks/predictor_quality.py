"""How well performance predictors rank architectures they have not seen, on finished searches (numbers, not
assertions): the evidence for the model of `bsnas.search.predictor`.

    python benchmarks/predictor_quality.py RUN_FOLDER [RUN_FOLDER ...] [--fractions 0.25 0.5 0.75] [--seeds 0 1 2]

Each RUN_FOLDER is a search's run folder (its study.db, as `bsnas search` or benchmarks/search_quality.py leave
them; a folder holding such folders is searched for them). For each search and each fraction f: the trainings
completed before the moment when f of its trainings had completed are what a predictor would have seen then; the
candidates whose first training completed after it are unseen. Each model is fitted on the seen trainings (the
encoding of `bsnas.search.predictor.features` and the rung) and predicts the unseen candidates' accuracy at the
highest rung each reached. Printed per model: Spearman's rho against the measured accuracy at rung 0 and at the
highest rung, median [min, max] over searches, fractions and model seeds, and the median fit time. `flops` ranks by
FLOPs alone, the trivial predictor to beat.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bsnas.arch.validate import spec_from_dict
from bsnas.search.predictor import MIN_LEAF, TREES, Predictor, Training
from bsnas.search.promotion import results
from bsnas.search.ranking import spearman_rho
from bsnas.search.study import load_record

MODELS = {
    "extra-trees (bsnas)": lambda seed: None,  # Predictor's own model
    "extra-trees, all features": lambda seed: ExtraTreesRegressor(TREES, min_samples_leaf=MIN_LEAF, random_state=seed),
    "random-forest": lambda seed: RandomForestRegressor(TREES, min_samples_leaf=MIN_LEAF, max_features=0.5,
                                                        random_state=seed),
    "gradient-boosting": lambda seed: GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05,
                                                                subsample=0.8, random_state=seed),
    "ridge": lambda seed: make_pipeline(StandardScaler(), RidgeCV(alphas=(0.1, 1.0, 10.0, 100.0))),
}


def find_runs(folders: list[str]) -> list[Path]:
    """Search run folders (holding a study.db) among `folders` and their sub-folders."""
    found = []
    for folder in map(Path, folders):
        found += sorted(db.parent for db in ([folder / "study.db"] if (folder / "study.db").exists()
                                             else folder.rglob("study.db")))
    return found


def trainings_of(run: Path) -> tuple[list[tuple[float, Training]], dict]:
    """(completion time, training) of every finished training of the search in `run`, in order, and the specs."""
    record = load_record(run.name, runs_dir=str(run.parent))
    found, specs = [], {}
    for rung, study in enumerate(record.rungs):
        for ticket in results(study):
            key = ticket.user_attrs["spec_hash"]
            specs.setdefault(key, spec_from_dict(json.loads(ticket.user_attrs["spec"]), source=str(run)))
            found.append((ticket.datetime_complete.timestamp(), Training(key, rung, ticket.values[0])))
    return sorted(found, key=lambda pair: pair[0]), specs


def evaluate(trainings: list[tuple[float, Training]], specs: dict, fraction: float, model_name: str, seed: int):
    """(rho at rung 0, rho at the highest rung, fit seconds) of one model fitted on the trainings seen at `fraction`;
    None when fewer than 5 candidates are unseen or 10 trainings seen."""
    cut = trainings[int(fraction * len(trainings))][0]
    seen = [t for when, t in trainings if when < cut]
    first = {}
    for when, t in trainings:
        first.setdefault(t.spec_hash, when)
    unseen = {key for key, when in first.items() if when >= cut}
    highest: dict[str, Training] = {}
    for _, t in trainings:
        if t.spec_hash in unseen and (t.spec_hash not in highest or t.rung > highest[t.spec_hash].rung):
            highest[t.spec_hash] = t
    rung0 = {t.spec_hash: t for _, t in trainings if t.spec_hash in unseen and t.rung == 0}
    if len(unseen) < 5 or len(seen) < 10:
        return None
    if model_name == "flops":
        from bsnas.arch.cost import cost

        score = {key: -cost(specs[key]).flops for key in unseen}  # fewer FLOPs, less accurate: rank by cost

        def predict(key: str, rung: int) -> float:
            return -score[key]
        seconds = 0.0
    else:
        predictor = Predictor(seed, model=MODELS[model_name](seed))
        start = time.perf_counter()
        predictor.fit(seen, specs)
        seconds = time.perf_counter() - start

        def predict(key: str, rung: int) -> float:
            return float(predictor.predict([predictor.encode(key, specs[key])], [rung])[0][0, 0])
    rho0 = spearman_rho([predict(k, 0) for k in rung0], [t.accuracy for t in rung0.values()])
    rho_top = spearman_rho([predict(k, t.rung) for k, t in highest.items()], [t.accuracy for t in highest.values()])
    return rho0, rho_top, seconds


def _spread(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{statistics.median(values):+.2f} [{min(values):+.2f}, {max(values):+.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="search run folders, or folders holding them")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    args = parser.parse_args(argv)
    runs = find_runs(args.runs)
    if not runs:
        print(f"predictor_quality: error: no study.db under {', '.join(args.runs)}", file=sys.stderr)
        return 2
    data = [trainings_of(run) for run in runs]
    print(f"{len(runs)} searches, {sum(len(t) for t, _ in data)} trainings; fractions {args.fractions}, model seeds "
          f"{args.seeds}; Spearman rho on unseen candidates, median [min, max]")
    print(f"{'model':28s} {'rho at rung 0':>24s} {'rho at highest rung':>24s} {'fit ms':>8s} {'cases':>6s}")
    for name in ["flops", *MODELS]:
        rows = [found for trainings, specs in data for fraction in args.fractions
                for seed in (args.seeds if name != "flops" else [0])
                if (found := evaluate(trainings, specs, fraction, name, seed)) is not None]
        if not rows:
            print(f"{name:28s} (no case with 10 trainings seen and 5 candidates unseen)")
            continue
        print(f"{name:28s} {_spread([r[0] for r in rows]):>24s} {_spread([r[1] for r in rows]):>24s} "
              f"{statistics.median(r[2] for r in rows) * 1000:8.0f} {len(rows):6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
