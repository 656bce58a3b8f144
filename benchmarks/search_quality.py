"""Evidence at equal compute: `bsnas search` against itself without the warm start, random search, single
fidelity, Syne Tune's MOASHA and the zoo, over search seeds, after one final training for all.

    python benchmarks/search_quality.py [--budget 20MFLOPs] [--search-minutes 5] [--seeds 0 1 2]
        [--methods default,no-warm-start,random,single-fidelity,moasha,zoo,predictor,predictor-no-warm-start]
        [--baseline default] [--final-epochs 1] [--final-images 20000] [--points 3] [--noise-seeds 3]
        [--workers 2] [--threads 1] [--space mobilenet] [--dataset fashion-mnist] [--data-root DIR] [--device cpu]
        [--name bench-quality] [--runs-dir runs] [--plots-dir DIR] [--smoke]

Methods (the same space, budget, data, workers and threads, search seed and time T each):

- default: `bsnas search` with its defaults (evolution sampler, rungs, warm start from the zoo);
- no-warm-start: the same with `--no-warm-start` (what the search finds by itself);
- random: `--sampler random --no-warm-start`, with the rungs;
- single-fidelity: `--rungs 1 --no-warm-start` (its default sampler, NSGA-II, on the proxy preset); without the
  warm start like the other searches from scratch, so that it differs from no-warm-start in the fidelity (and
  the sampler that goes with it) only; what the warm start adds is default against no-warm-start;
- moasha: Syne Tune's MOASHA (benchmarks/moasha_peer.py, the `bench` extra) at bsnas's rungs;
- zoo: every zoo model of the space's family that is a point of the space and fits the budget (no search);
- predictor: `bsnas search` with its defaults but `--sampler predictor` (the performance predictor chooses what
  is trained, `bsnas.search.guided`): against default, only the sampler differs;
- predictor-no-warm-start: `--sampler predictor --no-warm-start`: against no-warm-start and random, only the
  sampler differs.

Each search runs as a user runs it (`python -m bsnas search ... --timeout T`, its own run folder), one after the
other, interleaved (seed 0: every method, then seed 1, ...). `--timeout` stops *starting* trainings at T, so
every method is measured at T: only trainings that completed by launch + T count, and the process is stopped
(SIGTERM) a few seconds after T. CPU-seconds are those of the process and everything it started (getrusage of
the children), and, for the curves, of its process tree sampled from /proc every second. A method's answer is
its front (validation accuracy, cost) at the highest rung any of its trainings reached by T.

Final training: the same preset for all (`bsnas retrain`'s `paper` preset, `--final-epochs` epochs, on
`--final-images` training images, 0: all; test accuracy on the test split), of up to `--points` points of each
answer (in this order: the most accurate, the knee, the cheapest; see `bsnas.search.front.knee_index`) and of
every zoo model under the budget. An architecture is trained once for all methods that found it (by spec hash
and training seed). The noise of the final training itself: the most accurate final point of the default
method (first seed) and the most accurate zoo model trained again with training seeds 1 .. `--noise-seeds` - 1.

Metrics per method and seed: hypervolume (`bsnas.search.hypervolume`) of (test accuracy, cost / budget) of the
final-trained points against (budget, accuracy 0), also on a log-cost axis from the space's cheapest point (exact,
`smallest_cost`) to the budget; the best test accuracy under the budget; the hypervolume of the front at the
highest rung reached (validation accuracy) against CPU-seconds. Over seeds: median and range per method, the
wins of the `--baseline` method (default: default) over each other method per seed, and the paired differences
(baseline - other).

Resumable: a finished search (its `<method>-s<seed>.json`) and a finished final training (its result.json) are
reused when the command runs again; an unfinished search is run again from scratch. Searches live in a folder
named after their settings, final trainings in one named after the final preset, so more seeds, or a longer
final training, reuse all that was done. Writes `results.json`, `results.csv`, `final.csv`, `hypervolume.png`
(hypervolume against CPU-seconds) and `fronts.png` (the final-trained points of every method and the zoo) in
runs/<name>/, the plots also in `--plots-dir`.

`--smoke`: synthetic data, a 1 MFLOPs budget, 20-second searches (a search takes 5-15 s to start) with one
worker, two rungs on 64 images, one final epoch: the whole pipeline in minutes (the tests run it). The paper
setting, when CIFAR-10 and a GPU are there: `--dataset cifar10 --data-root data --budget 100MFLOPs --device cuda
--workers 1 --threads 4`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bsnas.arch.cost import cost
from bsnas.arch.spec import spec_hash, spec_to_dict
from bsnas.arch.validate import spec_from_dict
from bsnas.arch.zoo import get_spec
from bsnas.errors import BsnasError
from bsnas.search.budget import check_budgets, format_cost, parse_budget
from bsnas.search.config import cost_value
from bsnas.search.front import knee_index
from bsnas.search.hypervolume import hypervolume, nondominated
from bsnas.search.promotion import results
from bsnas.search.study import load_record
from bsnas.search.warm_start import zoo_slots
from bsnas.space.load import resolve_space
from bsnas.space.summary import smallest_cost
from bsnas.train.rundir import run_path

# method -> the flags of `bsnas search` it adds (None: not a bsnas search)
METHODS: dict[str, list[str] | None] = {
    "default": [],
    "no-warm-start": ["--no-warm-start"],
    "random": ["--sampler", "random", "--no-warm-start"],
    "single-fidelity": ["--rungs", "1", "--no-warm-start"],
    "moasha": None,
    "zoo": None,
    "predictor": ["--sampler", "predictor"],
    "predictor-no-warm-start": ["--sampler", "predictor", "--no-warm-start"],
}
STOP_AFTER_S = 3.0  # seconds after T at which a search is stopped (nothing it finishes later counts)
KILL_AFTER_S = 20.0  # seconds a stopped search has to exit before it and its process group are killed
SAMPLE_S = 1.0  # how often the CPU time of a search's process tree is read
SMOKE = {"dataset": "synthetic", "budget": "1MFLOPs", "search_seconds": 20.0, "workers": 1, "threads": 1, "rungs": 2,
         "proxy_images": 64, "final_epochs": 1, "final_images": None, "noise_seeds": 2, "seeds": [0]}


@dataclass(frozen=True)
class Settings:
    """What a benchmark run depends on; the searches' part names their folder, the final part the final one."""

    budget: str = "20MFLOPs"
    search_seconds: float = 300.0
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    space: str = "mobilenet"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    device: str = "cpu"
    workers: int = 2
    threads: int = 1
    rungs: int | None = None  # None: bsnas search's default ladder
    proxy_images: int | None = None
    final_epochs: int = 1
    final_images: int | None = 20000  # None: all
    points: int = 3
    noise_seeds: int = 3
    baseline: str = "default"  # the method every other is compared with, seed by seed

    def search_key(self) -> dict:
        return {key: getattr(self, key) for key in ("budget", "search_seconds", "space", "dataset", "device",
                                                    "workers", "threads", "rungs", "proxy_images")}

    def search_folder(self) -> str:
        digest = hashlib.sha256(json.dumps(self.search_key(), sort_keys=True).encode()).hexdigest()[:8]
        return f"searches-{self.budget}-{self.search_seconds:g}s-{digest}"

    def final_folder(self) -> str:
        return f"final-paper-e{self.final_epochs}" + (f"-n{self.final_images}" if self.final_images else "")


# ------------------------------------------------------------------------------------------------ the searches


def tree_cpu_seconds(root: int) -> float | None:
    """CPU-seconds used so far by process `root` and its descendants (the reaped ones count in their parents'
    cutime and cstime); None where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, used = {}, {}
    try:
        entries = [entry for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # state, ppid, ..., utime, stime, cutime, cstime (14-17)
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = sum(int(value) for value in fields[11:15])
    tree, grew = {root}, True
    while grew:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        grew, tree = len(grown) > len(tree), grown
    return sum(used.get(pid, 0) for pid in tree) / tick


def run_timed(command: list[str], seconds: float, log: Path) -> dict:
    """Run `command` in a session of its own for `seconds` (then SIGTERM; SIGKILL to its whole process group when
    it does not exit); its wall and CPU seconds and CPU samples."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    samples: list[tuple[float, float]] = []
    with log.open("w") as output:
        launch = time.time()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                used = tree_cpu_seconds(process.pid)
                if used is not None:
                    samples.append((time.time() - launch, used))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stopped = False
        try:
            code = process.wait(timeout=seconds + STOP_AFTER_S)
        except subprocess.TimeoutExpired:
            stopped = True
            code = _stop(process)
        except BaseException:  # Ctrl-C of the benchmark: its search (in a session of its own) stops too
            _stop(process)
            raise
        finally:
            done.set()
            sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if code != 0 and not stopped:
        raise BsnasError(f"{' '.join(command[:4])} ... exited with status {code}; see {log}.")
    return {"launch": launch, "wall_s": time.time() - launch, "cpu_s": cpu, "exit": code, "stopped": stopped,
            "cpu_samples": samples}


def _stop(process: subprocess.Popen) -> int:
    """SIGTERM (the search stops its own workers); SIGKILL to its process group when it has not exited in time."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=KILL_AFTER_S)


def _search_command(settings: Settings, method: str, seed: int, folder: Path) -> list[str]:
    common = ["--budget", settings.budget, "--space", settings.space, "--dataset", settings.dataset, "--seed",
              str(seed), "--workers", str(settings.workers), "--threads", str(settings.threads), "--device",
              settings.device]
    common += ["--data-root", settings.data_root] if settings.data_root else []
    common += ["--proxy-images", str(settings.proxy_images)] if settings.proxy_images else []
    if method == "moasha":
        return [sys.executable, str(Path(__file__).with_name("moasha_peer.py")), *common, "--timeout",
                f"{settings.search_seconds:g}", "--out", str(folder)] + (
            ["--rungs", str(settings.rungs)] if settings.rungs else [])
    return [sys.executable, "-m", "bsnas", "search", *common, "--timeout", f"{settings.search_seconds:g}s",
            "--name", folder.name, "--runs-dir", str(folder.parent), "--quiet"] + (
        ["--rungs", str(settings.rungs)] if settings.rungs else []) + METHODS[method]


def _bsnas_trainings(folder: Path, launch: float) -> list[dict]:
    if not (folder / "study.db").exists():
        return []  # stopped before it made its study
    record = load_record(folder.name, runs_dir=str(folder.parent))
    found = []
    for rung, study in enumerate(record.rungs):
        for ticket in results(study):
            attrs = ticket.user_attrs
            found.append({"rung": rung, "spec_hash": attrs["spec_hash"], "spec": json.loads(attrs["spec"]),
                          "cost": ticket.values[1], "flops": attrs["flops"], "val_accuracy": ticket.values[0],
                          "zoo": attrs.get("zoo"), "completed": ticket.datetime_complete.timestamp() - launch})
    return found


def _peer_trainings(folder: Path, launch: float) -> list[dict]:
    lines = (folder / "trainings.jsonl").read_text().splitlines() if (folder / "trainings.jsonl").exists() else []
    found = []
    for line in lines:
        row = json.loads(line)
        if row["status"] == "completed":
            found.append({"rung": row["rung"], "spec_hash": row["spec_hash"], "spec": row["spec"],
                          "cost": row["cost"], "flops": row["flops"], "val_accuracy": row["val_accuracy"],
                          "zoo": None, "completed": row["completed"] - launch})
    return found


def run_search(settings: Settings, method: str, seed: int, folder: Path) -> tuple[dict, bool]:
    """The search of `method` with `seed` in `folder` (reused when it finished before); (its record, ran now)."""
    done = folder.with_suffix(".json")
    if done.exists():
        return json.loads(done.read_text()), False
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished search: its compute is not known, so it runs again whole
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"search {method} seed {seed}: {settings.search_seconds:g} s ...", file=sys.stderr, flush=True)
    timing = run_timed(_search_command(settings, method, seed, folder), settings.search_seconds,
                       folder.with_suffix(".log"))
    read = _peer_trainings if method == "moasha" else _bsnas_trainings
    record = {"method": method, "seed": seed, "seconds": settings.search_seconds, **timing,
              "trainings": read(folder, timing["launch"])}
    if method == "moasha":
        record["peer"] = json.loads((folder / "peer.json").read_text())
    done.write_text(json.dumps(record))
    return record, True


# ------------------------------------------------------------------------------------------------ the answers


def counted(record: dict) -> list[dict]:
    """The trainings that completed by launch + T."""
    return [t for t in record["trainings"] if t["completed"] <= record["seconds"]]


def front_of(trainings: list[dict]) -> list[dict]:
    """The front (validation accuracy, cost) at the highest rung of `trainings`, cheapest first."""
    if not trainings:
        return []
    top = max(t["rung"] for t in trainings)
    at_top = {(t["val_accuracy"], t["cost"]): t for t in reversed([t for t in trainings if t["rung"] == top])}
    return [at_top[point] for point in nondominated(at_top)]


def picks(front: list[dict], k: int) -> list[dict]:
    """Up to `k` points of a front, in this order: the most accurate, the knee, the cheapest."""
    if not front:
        return []
    order = [front[-1]]
    if len(front) >= 3:
        order.append(front[knee_index([(t["cost"], t["val_accuracy"]) for t in front])])
    order.append(front[0])
    chosen: list[dict] = []
    for point in order:
        if point["spec_hash"] not in {c["spec_hash"] for c in chosen}:
            chosen.append(point)
    return chosen[:k]


def curve(record: dict, budget: float) -> list[tuple[float, float, float]]:
    """(wall s, CPU-s, hypervolume of the front at the highest rung reached) after each counted training."""
    samples = [(0.0, 0.0), *map(tuple, record["cpu_samples"]), (record["wall_s"], record["cpu_s"])]

    def cpu_at(when: float) -> float:
        for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
            if t0 <= when <= t1:
                return c0 + (c1 - c0) * (when - t0) / ((t1 - t0) or 1.0)
        return record["cpu_s"]

    done = sorted(counted(record), key=lambda t: t["completed"])
    return [(t["completed"], cpu_at(t["completed"]),
             hypervolume([(p["val_accuracy"], p["cost"]) for p in front_of(done[:i + 1])], budget))
            for i, t in enumerate(done)]


# ------------------------------------------------------------------------------------------------ final training


def _final_config(settings: Settings, seed: int):
    from bsnas.train.config import preset

    return preset("paper", epochs=settings.final_epochs, seed=seed, threads=settings.threads, device=settings.device,
                  train_subset=settings.final_images)


_DATA = None


def _load_final_data(settings: Settings):
    from bsnas.train.data import DataConfig, load_data

    data_config = DataConfig(dataset=settings.dataset, data_root=settings.data_root)
    return load_data(data_config), data_config


def _start_final_worker(settings: Settings) -> None:
    import torch

    global _DATA
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(settings.threads)
    _DATA = _load_final_data(settings)


def _train_final(job: tuple[Settings, dict, str, int]) -> tuple[str, dict]:
    from bsnas.cli.retrain import retrain_spec

    settings, spec, folder, seed = job
    data, data_config = _DATA
    result = retrain_spec(spec_from_dict(spec, source=folder), Path(folder), data, data_config,
                          _final_config(settings, seed), quiet=True)
    return folder, result


def train_finals(settings: Settings, root: Path, wanted: dict[tuple[str, int], dict]) -> tuple[dict, int]:
    """Final-train every (spec hash, training seed) of `wanted` (its spec dict); reuse finished ones. Returns
    the results by key and how many were trained now."""
    folder = root / settings.final_folder()
    paths = {key: folder / f"{key[0]}-s{key[1]}" for key in wanted}
    found = {key: json.loads((path / "result.json").read_text()) for key, path in paths.items()
               if (path / "result.json").exists()}
    todo = [(settings, wanted[key], str(paths[key]), key[1]) for key in wanted if key not in found]
    by_folder = {str(paths[key]): key for key in wanted}
    print(f"final training ({settings.final_folder()}): {len(todo)} to train, {len(found)} reused",
          file=sys.stderr, flush=True)
    if settings.workers == 1:
        global _DATA
        if _DATA is None:
            _DATA = _load_final_data(settings)
        for path, result in map(_train_final, todo):
            found[by_folder[path]] = result
    elif todo:
        with multiprocessing.get_context("spawn").Pool(settings.workers, _start_final_worker, (settings,)) as pool:
            for path, result in pool.imap_unordered(_train_final, todo):
                found[by_folder[path]] = result
                print(f"  {Path(path).name}: test accuracy {result.get('test_accuracy')}", file=sys.stderr,
                      flush=True)
    return found, len(todo)


# ------------------------------------------------------------------------------------------------ the metrics


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _scores(points: list[dict], budget: float, low: float) -> dict:
    pairs = [(p["test_accuracy"], p["cost"]) for p in points if p["test_accuracy"] is not None]
    return {"hypervolume": hypervolume(pairs, budget), "hypervolume_log": hypervolume(pairs, budget, low),
            "best_test_accuracy": max((a for a, c in pairs if c <= budget), default=None)}


def evaluate(settings: Settings, root: Path) -> dict:
    """Run (or reuse) every search and final training; every number of the benchmark."""
    budgets = tuple(check_budgets([parse_budget(settings.budget)]))
    if budgets[0].kind != "flops":
        raise BsnasError(f"--budget {settings.budget}: the benchmark compares on FLOPs; give a FLOPs budget.")
    budget = cost_value("flops", budgets[0].limit)
    from bsnas.train.data import DataConfig, load_data

    data = load_data(DataConfig(dataset=settings.dataset, data_root=settings.data_root))
    space = resolve_space(settings.space).for_data(data.in_channels, data.image_size, data.num_classes)
    low = cost_value("flops", smallest_cost(space, "flops"))
    searches_dir = root / settings.search_folder()
    searches_dir.mkdir(parents=True, exist_ok=True)
    (searches_dir / "settings.json").write_text(json.dumps(settings.search_key(), indent=2))
    if "moasha" in settings.methods and importlib.util.find_spec("syne_tune") is None:
        raise BsnasError("the moasha method needs Syne Tune: pip install -e '.[bench]' (or leave moasha out of "
                         "--methods).")
    runs, ran = {}, 0
    for seed in settings.seeds:  # interleaved: a change in the machine's load spreads over every method
        for method in settings.methods:
            if METHODS[method] is not None or method == "moasha":
                runs[method, seed], now = run_search(settings, method, seed, searches_dir / f"{method}-s{seed}")
                ran += now
    zoo = []
    if "zoo" in settings.methods:
        for name, _ in zoo_slots(space, budgets):
            spec = get_spec(name, space.num_classes, space.in_channels, space.image_size)
            zoo.append({"spec_hash": spec_hash(spec), "spec": spec_to_dict(spec), "zoo": name,
                        "cost": cost_value("flops", cost(spec)[0])})
    answers = {key: front_of(counted(record)) for key, record in runs.items()}
    chosen = {key: picks(front, settings.points) for key, front in answers.items()}
    wanted = {(p["spec_hash"], 0): p["spec"] for points in [*chosen.values(), zoo] for p in points}
    finals, trained = train_finals(settings, root, wanted)

    def tested(point: dict, seed: int = 0) -> dict:
        result = finals[point["spec_hash"], seed]
        return {**{k: point.get(k) for k in ("spec_hash", "cost", "val_accuracy", "zoo", "rung")},
                "name": point["spec"]["name"], "test_accuracy": result.get("test_accuracy")}

    per_run = []
    for (method, seed), record in runs.items():
        points = [tested(p) for p in chosen[method, seed]]
        done = counted(record)
        per_run.append({"method": method, "seed": seed, "cpu_s": record["cpu_s"], "wall_s": record["wall_s"],
                        "seconds": record["seconds"], "exit": record["exit"],
                        "trainings_per_rung": [sum(t["rung"] == r for t in done)
                                               for r in range(1 + max((t["rung"] for t in done), default=-1))],
                        "trainings_after_T": len(record["trainings"]) - len(done),
                        "first_result_s": min((t["completed"] for t in done), default=None),
                        "front": [{k: p[k] for k in ("spec_hash", "cost", "val_accuracy", "rung")}
                                  for p in answers[method, seed]],
                        "points": points, **_scores(points, budget, low), "curve": curve(record, budget),
                        **({"syne_tune": record["peer"]["syne_tune"]} if method == "moasha" else {})})
    zoo_points = [tested(p) for p in zoo]
    if zoo:
        per_run += [{"method": "zoo", "seed": seed, "points": zoo_points, **_scores(zoo_points, budget, low)}
                    for seed in settings.seeds]
    noise, trained_noise = _noise(settings, root, per_run, zoo_points, {p["spec_hash"]: p["spec"]
                                                                         for p in [*zoo, *sum(chosen.values(), [])]})
    return {"settings": asdict(settings), "budget": budget, "unit": format_cost("flops", budgets[0].limit),
            "log_axis_low": low, "runs": per_run, "summary": _summary(per_run, settings),
            "noise": noise, "new_searches": ran, "new_final_trainings": trained + trained_noise,
            "torch": _torch_version()}


def _torch_version() -> str:
    import torch

    return torch.__version__


def _noise(settings: Settings, root: Path, per_run: list[dict], zoo_points: list[dict],
           specs: dict[str, dict]) -> tuple[list[dict], int]:
    """Test accuracy of the default method's best final point (first seed) and the best zoo model over training
    seeds 0 .. noise_seeds - 1."""
    if settings.noise_seeds < 2:
        return [], 0
    targets = []
    first = next((run for run in per_run if run["method"] == "default"), None)
    for points in ([p for p in first["points"]] if first else [], zoo_points):
        best = max((p for p in points if p["test_accuracy"] is not None), key=lambda p: p["test_accuracy"],
                   default=None)
        if best is not None and best["spec_hash"] not in {t["spec_hash"] for t in targets}:
            targets.append(best)
    wanted = {(t["spec_hash"], seed): specs[t["spec_hash"]] for t in targets for seed in range(settings.noise_seeds)}
    finals, trained = train_finals(settings, root, wanted)
    rows = []
    for target in targets:
        accuracies = [finals[target["spec_hash"], seed].get("test_accuracy") for seed in range(settings.noise_seeds)]
        rows.append({"name": target["name"], "spec_hash": target["spec_hash"], "test_accuracy_by_seed": accuracies,
                     "spread": max(accuracies) - min(accuracies)})
    return rows, trained


def _summary(per_run: list[dict], settings: Settings) -> list[dict]:
    """Per method: median and range over seeds; against the baseline method: wins and paired differences."""
    rows = []
    by = {(run["method"], run["seed"]): run for run in per_run}
    for method in settings.methods:
        mine = [run for run in per_run if run["method"] == method]
        if not mine:
            continue
        row = {"method": method, "seeds": len(mine)}
        ladders = [run["trainings_per_rung"] for run in mine if "trainings_per_rung" in run]
        if ladders:
            row["trainings_per_rung"] = [statistics.median(ladder[r] if r < len(ladder) else 0 for ladder in ladders)
                                         for r in range(max(map(len, ladders)))]
        for metric in ("hypervolume", "hypervolume_log", "best_test_accuracy", "cpu_s"):
            values = [run[metric] for run in mine if run.get(metric) is not None]
            row[metric] = _spread(values) if values else None
        base = settings.baseline
        if method != base and any(m == base for m, _ in by):
            for metric in ("hypervolume", "best_test_accuracy"):
                pairs = [(by[base, s][metric], by[method, s][metric]) for s in settings.seeds
                         if (base, s) in by and (method, s) in by
                         and None not in (by[base, s][metric], by[method, s][metric])]
                row[f"baseline_minus_this_{metric}"] = _spread([a - b for a, b in pairs]) if pairs else None
                row[f"baseline_wins_{metric}"] = sum(a > b for a, b in pairs)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ output


def write_outputs(result: dict, root: Path, plots_dir: Path | None) -> list[Path]:
    (root / "results.json").write_text(json.dumps(result, indent=1))
    columns = ["method", "seed", "hypervolume", "hypervolume_log", "best_test_accuracy", "cpu_s", "wall_s",
               "seconds", "first_result_s", "trainings_per_rung", "trainings_after_T", "syne_tune"]
    with (root / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["runs"])
    with (root / "final.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["method", "seed", "name", "spec_hash", "zoo", "cost", "rung",
                                                  "val_accuracy", "test_accuracy"])
        writer.writeheader()
        for run in result["runs"]:
            for point in run["points"]:
                writer.writerow({"method": run["method"], "seed": run["seed"], **point})
    plots = [_plot_curves(result, root / "hypervolume.png"), _plot_fronts(result, root / "fronts.png")]
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for plot in plots:
            shutil.copyfile(plot, plots_dir / f"search_quality_{plot.name}")
    return plots


def _figure():
    """A figure, its axes and a colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    return figure, axes, dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))


def _save(figure, axes, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib.pyplot as plt

    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _plot_curves(result: dict, path: Path) -> Path:
    figure, axes, colours = _figure()
    for run in result["runs"]:
        if run.get("curve"):
            _, cpu, hv = zip(*run["curve"], strict=True)
            axes.step(cpu, hv, where="post", color=colours[run["method"]], alpha=0.8,
                      label=run["method"] if run["seed"] == result["settings"]["seeds"][0] else None)
    return _save(figure, axes, path, "CPU-seconds (the search's process tree)",
                 f"hypervolume, val accuracy at the top rung x cost / {result['unit']}",
                 "Hypervolume of the front at the highest rung reached, one line per seed")


def _plot_fronts(result: dict, path: Path) -> Path:
    figure, axes, colours = _figure()
    shown = set()
    for run in result["runs"]:
        if run["method"] == "zoo" and "zoo" in shown:
            continue
        points = sorted((p["cost"], p["test_accuracy"]) for p in run["points"] if p["test_accuracy"] is not None)
        if not points:
            continue
        costs, accuracies = zip(*points, strict=True)
        zoo = run["method"] == "zoo"
        axes.scatter(costs, accuracies, s=18 if zoo else 30, marker="x" if zoo else "o", color=colours[run["method"]],
                     alpha=0.6 if zoo else 0.9, label=None if run["method"] in shown else run["method"])
        shown.add(run["method"])
    axes.axvline(result["budget"], color="grey", linestyle="--", linewidth=1)
    axes.set_xscale("log")
    return _save(figure, axes, path, f"cost ({result['unit']} budget, dashed)",
                 "test accuracy after the final training",
                 "Final-trained points of every method (all seeds) and the zoo models under the budget")


def print_table(result: dict) -> None:
    from rich.table import Table

    from bsnas.report.tables import table_console

    def show(cell: dict | None, scale: float = 1.0, digits: int = 4) -> str:
        if cell is None:
            return "-"
        median, low, high = (f"{cell[key] * scale:.{digits}f}" for key in ("median", "min", "max"))
        return f"{median} [{low}, {high}]"

    settings = result["settings"]
    table = Table(title=f"search quality: {settings['budget']}, {settings['search_seconds']:g} s per search, seeds "
                        f"{settings['seeds']}, final: {settings['final_epochs']} epoch(s); median [min, max]",
                  title_justify="left")
    for column in ("method", "hypervolume", "hv (log cost)", "best test acc %", "CPU-s", "trainings per rung",
                   f"{settings['baseline']} - this (hv)", f"{settings['baseline']} wins"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in result["summary"]:
        diff = row.get("baseline_minus_this_hypervolume")
        wins = row.get("baseline_wins_hypervolume")
        table.add_row(row["method"], show(row["hypervolume"]), show(row["hypervolume_log"]),
                      show(row["best_test_accuracy"], 100, 2), show(row["cpu_s"], 1, 0),
                      "/".join(f"{n:g}" for n in row.get("trainings_per_rung", [])) or "-", show(diff),
                      "-" if diff is None else f"{wins} of {diff['n']}")
    console = table_console()
    console.print(table)
    for row in result["noise"]:
        seeds = ", ".join("-" if a is None else f"{a:.2%}" for a in row["test_accuracy_by_seed"])
        console.print(f"final-training noise: {row['name']}: {seeds} (training seeds 0..; spread "
                      f"{row['spread'] * 100:.2f} points)", highlight=False, soft_wrap=True)
    console.print(f"log-cost axis from {result['log_axis_low']:g} {result['unit'].split()[-1]} (the space's cheapest "
                  f"point); torch {result['torch']}; {result['new_searches']} searches and "
                  f"{result['new_final_trainings']} final trainings run now, the rest reused", highlight=False,
                  soft_wrap=True)


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default=None, help="the budget of every method (default 20MFLOPs)")
    parser.add_argument("--search-minutes", type=float, default=None, help="T of every search (default 5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="search seeds (default 0 1 2)")
    parser.add_argument("--methods", default=None, help=f"comma-separated, of {', '.join(METHODS)} (default all)")
    parser.add_argument("--final-epochs", type=int, default=None, help="epochs of the final training (default 1)")
    parser.add_argument("--final-images", type=int, default=None,
                        help="training images of it (default 20000; 0: all)")
    parser.add_argument("--baseline", default="default",
                        help="the method every other is compared with, seed by seed (default: default)")
    parser.add_argument("--points", type=int, default=3, choices=(1, 2, 3), help="final points per answer")
    parser.add_argument("--noise-seeds", type=int, default=None, help="training seeds of the noise check (3)")
    parser.add_argument("--workers", type=int, default=None, help="workers of every method (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default 1)")
    parser.add_argument("--space", default="mobilenet")
    parser.add_argument("--dataset", default=None, help="default fashion-mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="bench-quality", help="run folder under --runs-dir")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--plots-dir", default=None, help="also write the two plots here (e.g. docs)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings on synthetic data (seconds)")
    args = parser.parse_args(argv)
    base = {**asdict(Settings()), **(SMOKE if args.smoke else {})}
    given = {"budget": args.budget, "seeds": args.seeds, "final_epochs": args.final_epochs,
             "final_images": args.final_images, "noise_seeds": args.noise_seeds, "workers": args.workers,
             "threads": args.threads, "dataset": args.dataset,
             "search_seconds": None if args.search_minutes is None else args.search_minutes * 60,
             "methods": None if args.methods is None else [m.strip() for m in args.methods.split(",")]}
    values = {**base, **{key: value for key, value in given.items() if value is not None},
              "points": args.points, "baseline": args.baseline, "space": args.space, "data_root": args.data_root,
              "device": args.device}
    unknown = [m for m in [*values["methods"], values["baseline"]] if m not in METHODS]
    if unknown:
        raise BsnasError(f"--methods: {', '.join(unknown)} is not one of {', '.join(METHODS)}.")
    values["seeds"], values["methods"] = tuple(values["seeds"]), tuple(values["methods"])
    values["final_images"] = values["final_images"] or None
    return Settings(**values), run_path(args.runs_dir, args.name), None if args.plots_dir is None else Path(
        args.plots_dir)


def main(argv: list[str] | None = None) -> int:
    try:
        settings, root, plots_dir = parse_args(argv)
        result = evaluate(settings, root)
    except BsnasError as error:
        print(f"search_quality: error: {error}", file=sys.stderr)
        return 2
    plots = write_outputs(result, root, plots_dir)
    print_table(result)
    print(f"wrote {root / 'results.json'}, results.csv, final.csv, {', '.join(p.name for p in plots)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
