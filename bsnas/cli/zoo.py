"""`bsnas zoo list|show`: the published model zoo as names and ArchSpec YAML."""

from __future__ import annotations

import argparse
import json

from bsnas.arch.spec import spec_to_yaml
from bsnas.arch.zoo import GRAMMAR, get_spec, list_models


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("zoo", help="list the zoo models or print one as ArchSpec YAML")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list the model names",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"Zoo names follow this grammar (w<N>d<D>: width N/D):\n{GRAMMAR}")
    listing.add_argument("--pattern", help="only names matching this regular expression")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    show = actions.add_parser("show", help="print a model's ArchSpec as YAML")
    show.add_argument("name", help="a zoo name, e.g. cifar_mobilenetv2_w1d2_bsconvs_p1d6")
    show.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default 10 / 1000)")
    show.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        names = list_models(args.pattern)
        print(json.dumps(names) if args.json else "\n".join(names))
        return 0
    print(spec_to_yaml(get_spec(args.name, args.num_classes, args.in_channels)), end="")
    return 0
