"""`bsnas space show FILE`: the choices of a search space, its size, the FLOPs of its points and its zoo points."""

from __future__ import annotations

import argparse
import json
import math
import random

from bsnas.arch.cost import cost
from bsnas.arch.zoo import get_spec, list_models, zoo_family
from bsnas.cli.profile import parse_input_size
from bsnas.errors import BsnasError
from bsnas.report.tables import Column, print_table, table_console
from bsnas.search.budget import format_cost
from bsnas.space.invert import params_of
from bsnas.space.load import resolve_space
from bsnas.space.summary import extreme_point, smallest_cost, space_size

__all__ = ["add_parser", "run", "summarize_space"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("space", help="inspect a search space (search_spaces/*.yaml)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print a space, its size, the FLOPs range of its points, its zoo points")
    show.add_argument("file", help="a search-space YAML file (e.g. search_spaces/mobilenet.yaml) or a shipped "
                                   "space's name (mobilenet, resnet)")
    show.add_argument("--input-size", default="1x28x28",
                      help="CxHxW at which FLOPs are counted (default 1x28x28, Fashion-MNIST)")
    show.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default 10)")
    show.add_argument("--samples", type=int, default=500, help="random points for the FLOPs distribution (default 500)")
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    show.set_defaults(run=run)


def summarize_space(path: str, input_size: tuple[int, int, int], num_classes: int = 10, samples: int = 500,
                    seed: int = 0) -> dict:
    """Size, FLOPs range (the exact minimum, the largest point found, random points) and zoo points of a space."""
    if input_size[1] != input_size[2]:
        raise BsnasError(f"--input-size {'x'.join(map(str, input_size))}: search spaces take square images.")
    space = resolve_space(path).for_data(input_size[0], input_size[1], num_classes)
    rng = random.Random(seed)
    flops = sorted(cost(space.random_spec(rng)[0]).flops for _ in range(samples))
    largest = cost(extreme_point(space, "flops", largest=True)).flops
    zoo = []
    if space.family:
        for name in list_models("^cifar_"):
            if zoo_family(name) == space.family:
                spec = get_spec(name, num_classes, input_size[0], input_size[1])
                if params_of(space, spec) is not None:
                    zoo.append({"name": name, "flops": cost(spec).flops})
    size = space_size(space)
    return {
        "file": path, "name": space.name, "family": space.family, "description": space.description,
        "input_size": list(input_size), "size": size if math.isfinite(size) else None,
        "log10_size": round(math.log10(size), 2) if math.isfinite(size) and size > 0 else None,
        "flops_min": smallest_cost(space, "flops"),
        "flops_max_found": max(largest, flops[-1]),
        "flops_sampled": {"samples": samples, "min": flops[0], "median": flops[len(flops) // 2], "max": flops[-1]},
        "fields": [{"field": field, "choices": text} for field, text in space.describe()],
        "zoo_points": zoo,
    }


def run(args: argparse.Namespace) -> int:
    summary = summarize_space(args.file, parse_input_size(args.input_size), args.num_classes, max(args.samples, 1))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    console = table_console()
    print_table(console, f"search space {summary['name']} ({summary['file']})",
                [Column("field", justify="left", fold=True), Column("choices", justify="left", fold=True)],
                [[row["field"], row["choices"]] for row in summary["fields"]])
    size = "infinite (continuous ranges)" if summary["size"] is None else f"{summary['size']:.3g} points " \
        f"(10^{summary['log10_size']})"
    sampled = summary["flops_sampled"]
    where = "x".join(map(str, summary["input_size"]))
    console.print(f"size: {size}", highlight=False)
    console.print(f"FLOPs at {where}: from {format_cost('flops', summary['flops_min'])} (the cheapest point, exact) "
                  f"to at least {format_cost('flops', summary['flops_max_found'])} (the largest found); "
                  f"median of {sampled['samples']} random points {format_cost('flops', sampled['median'])}",
                  highlight=False)
    if summary["zoo_points"]:
        names = ", ".join(f"{z['name']} ({format_cost('flops', z['flops'])})" for z in summary["zoo_points"])
        console.print(f"zoo models that are points of the space ({len(summary['zoo_points'])}): {names}",
                      highlight=False)
    return 0
