"""``gscore launch --workers N script.py ARGS``: run a script on N data-parallel msrun workers
(README: Beyond one machine). The launcher itself is :mod:`gscore.dist.launch`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from gscore.dist import launch

    parser = sub.add_parser("launch", parents=[common], help="run a script on N data-parallel msrun workers (see README: Beyond one machine)")
    launch.add_arguments(parser)
    parser.set_defaults(run=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gscore.dist.launch import launch

    result = launch(
        args.command, args.workers, log_dir=args.log_dir, master_port=args.master_port, timeout=args.timeout,
        local_workers=args.local_workers, master_addr=args.master_addr, node_rank=args.node_rank,
    )
    return {"workers": args.workers, "log_dir": str(result.log_dir)}


def render(r: dict[str, Any]) -> str:
    return f"worker logs: {r['log_dir']}"
