"""``gscore list``, ``gscore info NAME`` and ``gscore models``: what is installed, without importing MindSpore;
``gscore launch --workers N script.py ARGS``: run a script on N data-parallel msrun workers."""

from __future__ import annotations

import argparse
import inspect
import sys

from gscore import plugins
from gscore.dist import launch
from gscore.errors import GscoreError


def _cmd_list(args: argparse.Namespace) -> int:
    host = plugins.host()
    infos = host.registry.infos()
    if not infos:
        print("no algorithms installed")
    for info in infos:
        aliases = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
        print(f"{info.name:<12} {info.source.distribution} {info.source.version}{aliases}  {info.summary}")
    for failure in host.failures:
        print(f"FAILED {failure}", file=sys.stdout)
        if args.verbose and failure.detail:
            print(failure.detail)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = plugins.host().get(args.name)
    print(f"name:         {info.name}")
    print(f"aliases:      {', '.join(info.aliases) or '-'}")
    print(f"class:        {info.cls.__module__}.{info.cls.__qualname__}")
    print(f"distribution: {info.source.distribution} {info.source.version}")
    print(f"plugin:       {info.source.plugin}")
    print()
    print(inspect.cleandoc(info.cls.__doc__ or ""))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    """``gscore models``: every registered model adapter, its plugin and whether it loads checkpoints."""
    host = plugins.host()
    infos = host.models.infos()
    if not infos:
        print("no model adapters installed")
    for info in infos:
        aliases = f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""
        loads = "loader" if info.loader_target is not None else "helper only"
        print(f"{info.name:<12} {info.source.distribution} {info.source.version} [{loads}]{aliases}  {info.summary}")
    for failure in host.failures:
        print(f"FAILED {failure}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gscore", description="Model compression for MindSpore, with algorithms as plugins.")
    sub = parser.add_subparsers(dest="command", required=True)
    list_parser = sub.add_parser("list", help="list installed algorithms and plugins that failed to load")
    list_parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of failed plugins")
    list_parser.set_defaults(func=_cmd_list)
    info_parser = sub.add_parser("info", help="describe one algorithm")
    info_parser.add_argument("name")
    info_parser.set_defaults(func=_cmd_info)
    sub.add_parser("models", help="list installed model adapters (network helpers and loaders)").set_defaults(func=_cmd_models)
    launch_parser = sub.add_parser("launch", help="run a script on N data-parallel msrun workers (see README: Beyond one machine)")
    launch.add_arguments(launch_parser)
    launch_parser.set_defaults(func=launch.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GscoreError as exc:
        print(f"gscore: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
