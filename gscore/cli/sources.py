"""Where a command's model and text come from: a model name or a Hugging Face-format folder,
the embedded Wikipedia splits or a user's ``.txt`` / ``.jsonl`` file, cut into token windows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gscore.errors import ConfigError, GscoreError, ModelFolderError

DEFAULT_MODEL = "smollm2-135m"
WIKIPEDIA = "wikipedia"


def _smollm2() -> Path:
    from gscore.models.smollm2 import smollm2_folder

    return smollm2_folder()


#: Model names with embedded weights -> their Hugging Face-format folder (converted on first use).
MODELS: dict[str, Callable[[], Path]] = {DEFAULT_MODEL: _smollm2}


def model_reference(model: str) -> str:
    """What a run records about its model: a model name as is, a folder as an absolute path."""
    if model in MODELS:
        return model
    path = Path(model)
    if not path.is_dir():
        raise ModelFolderError(f"model {model!r} is neither a model name ({', '.join(MODELS)}) nor an existing folder")
    return str(path.resolve())


def open_model(model: str) -> Any:
    """The checked :class:`~gscore.models.hf_folder.LlamaFolder` of a model name or folder."""
    from gscore.models.hf_folder import open_llama_folder

    reference = model_reference(model)
    return open_llama_folder(MODELS[reference]() if reference in MODELS else reference)


def read_texts(source: str) -> list[str]:
    """The documents of a ``.txt`` file (the whole file) or a ``.jsonl`` file (each line's ``"text"``)."""
    path = Path(source)
    if path.suffix not in (".txt", ".jsonl"):
        raise ConfigError(f"text source {source!r}: give {WIKIPEDIA!r} (the embedded Wikipedia split), a .txt or a .jsonl file")
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"text source {source!r} cannot be read: {exc}") from exc
    if path.suffix == ".txt":
        return [content]
    texts = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}:{number}: not a JSON line ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ConfigError(f"{source}:{number}: each line must be a JSON object with a string field 'text'")
        texts.append(record["text"])
    return texts


def texts(source: str, split: str) -> list[str]:
    """Documents of ``source``: for ``wikipedia``, the articles of ``split`` (calibration / evaluation)."""
    if source != WIKIPEDIA:
        return read_texts(source)
    from gscore.data.wikipedia import load_articles, split_articles

    return split_articles(load_articles(), split)


def windows(tokenizer: Any, source: str, split: str, tokens: int, count: int) -> np.ndarray:
    """``count`` windows of ``tokens`` token ids from ``source`` (int32 ``[count, tokens]``)."""
    from gscore.data.wikipedia import token_windows

    if tokens < 2 or count < 1:
        raise ConfigError(f"windows need at least 2 tokens and a count of at least 1, got {count} x {tokens}")
    try:
        return token_windows(tokenizer, texts(source, split), tokens, count)
    except ValueError as exc:
        if isinstance(exc, GscoreError):
            raise
        raise ConfigError(f"text source {source!r}: {exc}") from exc
