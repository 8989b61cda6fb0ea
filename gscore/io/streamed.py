"""A quantized model written block by block: the folder streaming calibration fills, and reading it back.

Layout of the folder::

    manifest.json            what is finished, with the digest of every file's parameters
    rest.ckpt                what belongs to no block (embeddings, final norm, output head)
    <block name>.ckpt        one MindSpore checkpoint per finished block (full parameter names)
    state/<block>.rank<r>.npy   the calibration activations after the last finished block, per worker

Every file is written atomically (temporary file, then rename) and the manifest is rewritten
atomically after a block's files are in place, so after a crash the manifest only lists blocks
whose files are complete. :meth:`StreamedCheckpoint.open` refuses a folder written by a
different job (``job``: model, algorithm and config, calibration windows, worker layout) and
checks the digest of every finished block before a run resumes after it.

Digests are :func:`gscore.io.digest.parameters_digest` of the parameters (for states,
:func:`~gscore.io.digest.array_digest`), so a file is accepted exactly when its content is the
one recorded.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn

from gscore.errors import CheckpointMismatchError, ConfigError
from gscore.io.atomic import atomic_target
from gscore.io.checkpoint import load_parameters
from gscore.io.digest import array_digest, parameters_digest

FORMAT = "gscore-streamed"
VERSION = 1
MANIFEST = "manifest.json"
REST = "rest"


def _written_before_manifest(name: str) -> bool:
    """What a run killed before its first manifest can leave: the rest file, or a temporary file."""
    return name == f"{REST}.ckpt" or name.startswith((f".{REST}.ckpt.", f".{MANIFEST}."))


@dataclass
class StreamedCheckpoint:
    """The manifest of a streamed checkpoint folder, and the files it names."""

    folder: Path
    job: dict[str, Any]
    blocks: list[dict[str, Any]] = field(default_factory=list)  # finished blocks in order: name, file, digest, states
    rest: dict[str, Any] | None = None
    description: dict[str, Any] | None = None
    complete: bool = False

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike[str], job: dict[str, Any]) -> "StreamedCheckpoint":
        """The folder's manifest for ``job``: a new one if the folder holds none, else the one
        there, checked to belong to ``job`` and to match every finished file's digest.

        Raises :class:`~gscore.errors.ConfigError` for a folder of another job and
        :class:`~gscore.errors.CheckpointMismatchError` for a file that is not what the
        manifest recorded.
        """
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            foreign = [p.name for p in folder.iterdir() if not _written_before_manifest(p.name)] if folder.is_dir() else []
            if foreign:
                raise ConfigError(f"{folder} holds {foreign[:3]} and no {MANIFEST}: give streaming calibration a new or empty output folder")
            return cls(folder, job)
        stored = json.loads(path.read_text())
        if stored.get("format") != FORMAT or stored.get("version") != VERSION:
            raise CheckpointMismatchError(f"{path}: format {stored.get('format')!r} version {stored.get('version')!r}, this gscore reads {FORMAT!r} version {VERSION}")
        if stored["job"] != job:
            differing = sorted(k for k in set(stored["job"]) | set(job) if stored["job"].get(k) != job.get(k))
            raise ConfigError(
                f"{folder} holds a streamed checkpoint of another job (differing: {', '.join(differing)}); "
                "resume with the same model, algorithm, config, windows and workers, or use a new output folder"
            )
        made = cls(folder, job, stored["blocks"], stored["rest"], stored["description"], stored["complete"])
        made.verify()
        return made

    def verify(self) -> None:
        """Check that every finished file holds the parameters its digest says."""
        entries = ([self.rest] if self.rest else []) + self.blocks
        for entry in entries:
            found = parameters_digest(self._read(entry["file"]))
            if found != entry["digest"]:
                raise CheckpointMismatchError(f"{self.folder / entry['file']} does not hold what {MANIFEST} recorded (digest {found[:16]}, recorded {entry['digest'][:16]})")

    # -- writing -------------------------------------------------------------------------

    def finished(self, name: str) -> bool:
        return any(block["name"] == name for block in self.blocks)

    def write_part(self, name: str, network: nn.Cell) -> dict[str, Any]:
        """Write ``network``'s parameters as ``<name>.ckpt``; returns its entry (file, digest)."""
        file = f"{name}.ckpt"
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_target(self.folder / file) as tmp:
            ms.save_checkpoint(network, str(tmp))
        return {"file": file, "digest": parameters_digest(network)}

    def state_path(self, block: str, rank: int) -> Path:
        return self.folder / "state" / f"{block}.rank{rank}.npy"

    def write_state(self, block: str, rank: int, hidden: np.ndarray) -> str:
        """Save one worker's activations after ``block``; returns their digest."""
        path = self.state_path(block, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_target(path) as tmp, open(tmp, "wb") as stream:
            np.save(stream, hidden)
        return array_digest(hidden)

    def read_state(self, rank: int) -> np.ndarray:
        """One worker's activations after the last finished block, checked against the manifest."""
        last = self.blocks[-1]
        path = self.state_path(last["name"], rank)
        if not path.is_file():
            raise CheckpointMismatchError(f"{path}: missing; it holds worker {rank}'s activations after {last['name']}, needed to resume")
        hidden = np.load(path)
        if array_digest(hidden) != last["states"][rank]:
            raise CheckpointMismatchError(f"{path} does not hold what {MANIFEST} recorded for worker {rank} after {last['name']}")
        return hidden

    def drop_states_before(self, block: str, rank: int) -> None:
        """Remove this worker's state files of blocks before ``block`` (only the last is needed)."""
        for entry in self.blocks:
            if entry["name"] != block:
                self.state_path(entry["name"], rank).unlink(missing_ok=True)

    def save(self) -> None:
        """Rewrite the manifest atomically."""
        record = {
            "format": FORMAT, "version": VERSION, "job": self.job, "rest": self.rest, "blocks": self.blocks,
            "description": self.description, "complete": self.complete,
        }
        with atomic_target(self.folder / MANIFEST) as tmp:
            tmp.write_text(json.dumps(record, indent=1))

    def finish(self, description: dict[str, Any]) -> None:
        """Mark the checkpoint complete and remove the activations kept for resuming."""
        self.description, self.complete = description, True
        self.save()
        shutil.rmtree(self.folder / "state", ignore_errors=True)

    # -- reading -------------------------------------------------------------------------

    def _read(self, file: str) -> dict[str, Any]:
        path = self.folder / file
        if not path.is_file():
            raise CheckpointMismatchError(f"{path}: missing, though {MANIFEST} lists it as written")
        return ms.load_checkpoint(str(path))

    def parameters(self) -> dict[str, Any]:
        """Every parameter of the finished files, by full name (quantized blocks are small: all at once)."""
        contents: dict[str, Any] = {}
        for entry in ([self.rest] if self.rest else []) + self.blocks:
            part = self._read(entry["file"])
            clash = sorted(set(part) & set(contents))
            if clash:
                raise CheckpointMismatchError(f"{self.folder / entry['file']} repeats parameters of another part: {clash[:5]}")
            contents.update(part)
        return contents


def read_streamed(folder: str | os.PathLike[str]) -> StreamedCheckpoint:
    """The complete streamed checkpoint in ``folder``, every file checked against its digest."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CheckpointMismatchError(f"{folder}: no {MANIFEST}; not a streamed checkpoint")
    stored = json.loads(path.read_text())
    made = StreamedCheckpoint.open(folder, stored.get("job"))
    if not made.complete:
        raise CheckpointMismatchError(f"{folder}: streamed calibration stopped after {len(made.blocks)} blocks; resume it to complete the checkpoint")
    return made


def load_streamed(folder: str | os.PathLike[str], network: nn.Cell) -> dict[str, Any] | None:
    """Load a complete streamed checkpoint into ``network`` (e.g. a DEPLOY network) strictly;
    returns its quantization description."""
    made = read_streamed(folder)
    load_parameters(made.parameters(), network, f"streamed checkpoint {str(folder)!r}")
    return made.description
