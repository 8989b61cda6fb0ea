"""Start a script on N data-parallel workers with MindSpore's ``msrun``, and clean up after it.

``msrun`` starts a scheduler and the workers, each running ``python SCRIPT ARGS`` with the
``python`` first on ``PATH``; :func:`launch` therefore puts this interpreter's directory first,
so the workers run in the same environment as the caller. Each worker writes its output to
``LOG_DIR/worker_<rank>.log`` (the scheduler to ``scheduler.log``).

Cleanup: ``msrun`` starts every worker in its own session, so killing ``msrun`` alone would
leave the workers running, holding their ports. When the job fails, times out or the caller
is interrupted, :func:`launch` asks ``msrun`` to stop its job (SIGINT, which it handles by
killing its workers), then kills whatever it started that is still alive, by process id.

Multi-host: run the same command on every host with the same ``workers`` (total), that
host's ``local_workers`` and ``node_rank``, and ``master_addr`` naming the host that runs the
scheduler (the one with ``node_rank`` 0); see README. From a shell::

    gscore launch --workers 2 script.py --script-arg value      # or: python -m gscore.dist.launch ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gscore.errors import ConfigError, GscoreError, LaunchError

STOP_GRACE_SECONDS = 15.0
POLL_SECONDS = 0.5
WORKER_FAILED = "worker exits with exception"  # what msrun prints once it has killed the workers after one failed


@dataclass(frozen=True)
class LaunchResult:
    """A finished job: ``msrun``'s output and the folder of the worker logs (``worker_<rank>.log``)."""

    log_dir: Path
    output: str


def free_port() -> int:
    """A TCP port no process listens on right now (for the scheduler)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def msrun_command(
    command: Sequence[str],
    workers: int,
    *,
    log_dir: str | os.PathLike[str],
    master_port: int,
    local_workers: int | None = None,
    master_addr: str = "127.0.0.1",
    node_rank: int | None = None,
    cluster_time_out: int = 300,
) -> list[str]:
    """The ``msrun`` command line that runs ``command`` (``[script.py, args...]``) on ``workers`` workers."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int (total worker processes), got {workers!r}")
    local = workers if local_workers is None else local_workers
    if isinstance(local, bool) or not isinstance(local, int) or not 1 <= local <= workers:
        raise ConfigError(f"local_workers must be an int in 1..workers ({workers}), got {local_workers!r}")
    if local < workers and node_rank is None:
        raise ConfigError("a job spread over several hosts (local_workers < workers) needs node_rank for this host (0 on the scheduler's host)")
    if not command or not str(command[0]).endswith(".py"):
        raise ConfigError(f"command must start with the path of a Python script (msrun runs 'python SCRIPT ARGS'), got {list(command)!r}")
    msrun = Path(sys.executable).with_name("msrun")
    cmd = [
        str(msrun) if msrun.exists() else "msrun",
        f"--worker_num={workers}",
        f"--local_worker_num={local}",
        f"--master_addr={master_addr}",
        f"--master_port={master_port}",
        f"--log_dir={Path(log_dir)}",
        "--join=True",
        f"--cluster_time_out={cluster_time_out}",
    ]
    if node_rank is not None:
        cmd.append(f"--node_rank={node_rank}")
    return cmd + [str(c) for c in command]


def _environment() -> dict[str, str]:
    """This environment with this interpreter's folder first on PATH (msrun starts ``python``)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _stop(process: subprocess.Popen) -> None:
    """End the job: SIGINT to msrun (it kills its workers), then SIGKILL to anything left."""
    import psutil  # a MindSpore dependency

    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    for child in started:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    if process.poll() is None:
        process.kill()
        process.wait()


class _Output:
    """msrun's output, read as it comes (a thread), noting when msrun reports a failed worker.

    msrun kills the other workers at once, but then waits for its scheduler, which notices the
    dead worker only after a heartbeat timeout (~30 s here); :func:`launch` stops the job when
    the report appears instead.
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.worker_failed = threading.Event()
        self.reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            if WORKER_FAILED in line:
                self.worker_failed.set()

    def text(self) -> str:
        self.reader.join()
        return "".join(self.lines)


def _log_tails(log_dir: Path, lines: int = 30) -> str:
    tails = []
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        kept = [line for line in text if not line.startswith("[")][-lines:]  # MindSpore's own [INFO]/[WARNING] lines left out
        tails.append(f"--- {log.name}\n" + "\n".join(kept))
    return "\n".join(tails)


def launch(
    command: Sequence[str],
    workers: int,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    master_port: int | None = None,
    timeout: float | None = None,
    **msrun_options: object,
) -> LaunchResult:
    """Run ``command`` (``[script.py, args...]``) on ``workers`` msrun workers and wait for them.

    ``log_dir``: where the worker logs go (a new temporary folder by default); ``master_port``:
    the scheduler's port (a free one by default); ``timeout``: seconds before the job is stopped;
    ``msrun_options``: ``local_workers``, ``master_addr``, ``node_rank``, ``cluster_time_out``
    (see :func:`msrun_command`). Raises :class:`LaunchError` with the end of every log when a
    worker fails or the timeout passes; no process of the job is left running either way.
    """
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="gscore-msrun-"))
    cmd = msrun_command(command, workers, log_dir=log_dir, master_port=master_port or free_port(), **msrun_options)
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise LaunchError("msrun not found: it comes with mindspore (pip install mindspore); install it in this environment")
    process = subprocess.Popen(cmd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    started = time.monotonic()
    output = _Output(process)
    try:
        while process.poll() is None:
            if output.worker_failed.wait(POLL_SECONDS):
                _stop(process)  # msrun has killed the other workers; its scheduler would wait out a heartbeat timeout
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise LaunchError(f"msrun job {' '.join(cmd)} did not finish in {timeout:.0f} s; stopped it\n{_log_tails(log_dir)}")
    except BaseException:
        _stop(process)
        raise
    if process.returncode != 0 or output.worker_failed.is_set():
        _stop(process)
        raise LaunchError(
            f"msrun job {' '.join(cmd)} failed (exit {process.returncode}) after {time.monotonic() - started:.0f} s; logs in {log_dir}\n{_log_tails(log_dir)}"
        )
    return LaunchResult(log_dir, output.text())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launcher's command-line arguments (``gscore launch`` and ``python -m gscore.dist.launch``)."""
    parser.add_argument("--workers", type=int, required=True, help="total worker processes (over all hosts)")
    parser.add_argument("--local-workers", type=int, default=None, help="workers on this host (default: all)")
    parser.add_argument("--master-addr", default="127.0.0.1", help="address of the host running the scheduler (node rank 0)")
    parser.add_argument("--master-port", type=int, default=None, help="the scheduler's port (default: a free one; give it on multi-host jobs)")
    parser.add_argument("--node-rank", type=int, default=None, help="this host's index, 0 on the scheduler's host (multi-host jobs)")
    parser.add_argument("--log-dir", default=None, help="folder for worker logs (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the job is stopped")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="script.py and its arguments")


def run(args: argparse.Namespace) -> int:
    """Launch the job the parsed arguments describe; 0 when every worker succeeded (errors raise)."""
    result = launch(
        args.command, args.workers, log_dir=args.log_dir, master_port=args.master_port, timeout=args.timeout,
        local_workers=args.local_workers, master_addr=args.master_addr, node_rank=args.node_rank,
    )
    print(f"worker logs: {result.log_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gscore.dist.launch", description="Run a script on N data-parallel msrun workers.")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except GscoreError as exc:
        print(f"gscore.dist.launch: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
