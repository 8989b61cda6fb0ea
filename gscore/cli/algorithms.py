"""``gscore list``, ``gscore info NAME`` and ``gscore models``: what is installed, without importing MindSpore."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from gscore import plugins


def add_list(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("list", parents=[common], help="list installed algorithms and plugins that failed to load")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of failed plugins")
    parser.set_defaults(run=run_list, render=render_list)


def run_list(args: argparse.Namespace) -> dict[str, Any]:
    host = plugins.host()
    algorithms = [
        {"name": i.name, "aliases": list(i.aliases), "distribution": i.source.distribution, "version": i.source.version, "summary": i.summary}
        for i in host.registry.infos()
    ]
    failures = [{"failure": str(f), "detail": f.detail if args.verbose else None} for f in host.failures]
    return {"algorithms": algorithms, "failures": failures}


def render_list(result: dict[str, Any]) -> str:
    lines = [] if result["algorithms"] else ["no algorithms installed"]
    width = _name_width(result["algorithms"])
    for a in result["algorithms"]:
        aliases = f" (aliases: {', '.join(a['aliases'])})" if a["aliases"] else ""
        lines.append(f"{a['name']:<{width}} {a['distribution']} {a['version']}{aliases}  {a['summary']}")
    for f in result["failures"]:
        lines.append(f"FAILED {f['failure']}")
        if f["detail"]:
            lines.append(f["detail"])
    return "\n".join(lines)


def add_info(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("info", parents=[common], help="describe one algorithm")
    parser.add_argument("name")
    parser.set_defaults(run=run_info, render=render_info)


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    info = plugins.host().get(args.name)
    return {
        "name": info.name,
        "aliases": list(info.aliases),
        "class": f"{info.cls.__module__}.{info.cls.__qualname__}",
        "distribution": info.source.distribution,
        "version": info.source.version,
        "plugin": info.source.plugin,
        "doc": inspect.cleandoc(info.cls.__doc__ or ""),
    }


def render_info(r: dict[str, Any]) -> str:
    return "\n".join([
        f"name:         {r['name']}",
        f"aliases:      {', '.join(r['aliases']) or '-'}",
        f"class:        {r['class']}",
        f"distribution: {r['distribution']} {r['version']}",
        f"plugin:       {r['plugin']}",
        "",
        r["doc"],
    ])


def add_models(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("models", parents=[common], help="list installed model adapters (network helpers and loaders)")
    parser.set_defaults(run=run_models, render=render_models)


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    host = plugins.host()
    models = [
        {"name": i.name, "aliases": list(i.aliases), "distribution": i.source.distribution, "version": i.source.version,
         "loader": i.loader_target is not None, "summary": i.summary}
        for i in host.models.infos()
    ]
    return {"models": models, "failures": [{"failure": str(f)} for f in host.failures]}


def render_models(result: dict[str, Any]) -> str:
    lines = [] if result["models"] else ["no model adapters installed"]
    width = _name_width(result["models"])
    for m in result["models"]:
        aliases = f" (aliases: {', '.join(m['aliases'])})" if m["aliases"] else ""
        loads = "loader" if m["loader"] else "helper only"
        lines.append(f"{m['name']:<{width}} {m['distribution']} {m['version']} [{loads}]{aliases}  {m['summary']}")
    lines += [f"FAILED {f['failure']}" for f in result["failures"]]
    return "\n".join(lines)


def _name_width(entries: list[dict[str, Any]]) -> int:
    """The width of the name column: the longest name, at least 12 characters."""
    return max([12, *(len(entry["name"]) for entry in entries)])
