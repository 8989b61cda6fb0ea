"""The ``gscore`` command: one module per verb, each a ``run(args) -> dict`` and a ``render``.

``main`` owns what every verb shares: ``--json`` (the result dict as JSON on stdout),
``--quiet`` (no output but errors, no progress bars), and the error contract: every error
is one line ``gscore: <message>`` on stderr with exit status 2, never a traceback
(``GSCORE_DEBUG=1`` shows it for an unexpected error); a closed pipe (``gscore list | head``)
ends the command quietly. Importing this package imports neither MindSpore nor tqdm; verbs
import what they need when they run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from gscore.errors import GscoreError

USAGE_ERROR = 2


class UsageError(GscoreError):
    """The command line itself is wrong (unknown option, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so usage errors look like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors; no progress bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    from gscore.cli import algorithms, evaluate, export, generate, inspect_ckpt, launch, quantize, report

    parser = _Parser(prog="gscore", description="Model compression for MindSpore, with algorithms as plugins.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _common()
    algorithms.add_list(sub, common)
    algorithms.add_info(sub, common)
    algorithms.add_models(sub, common)
    for verb in (quantize, evaluate, generate, inspect_ckpt, report, export, launch):
        verb.add_parser(sub, common)
    return parser


def _print(text: str) -> None:
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _fail(message: str, status: int = USAGE_ERROR) -> int:
    print(f"gscore: {message}", file=sys.stderr)
    return status


def _quiet_pipe() -> int:
    """stdout's reader went away: point stdout at /dev/null so the exit flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.quiet:
            os.environ["TQDM_DISABLE"] = "1"  # read by tqdm when first imported (by the verb)
            os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
        from gscore.cli.runs import json_ready

        result: dict[str, Any] = args.run(args)
        if args.json:
            _print(json.dumps(json_ready(result), indent=2, allow_nan=False, default=str))
        elif not args.quiet:
            _print(args.render(result))
        return 0
    except BrokenPipeError:
        return _quiet_pipe()
    except GscoreError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("GSCORE_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (GSCORE_DEBUG=1 shows the traceback)")

