"""English Wikipedia text from the gensim wheel, tokenised into fixed evaluation/calibration windows.

The excerpt is a real 2016 dump (107 articles after dropping redirects), cleaned with gensim's
``filter_wiki``. The split is fixed and documented: articles whose index (in dump order,
redirects dropped) satisfies ``index % 10 == 0`` are the *calibration* articles, all others
the *evaluation* articles, so calibration never sees evaluation text. Each split's articles
are joined with blank lines, tokenised as one stream, cut into non-overlapping windows, and
``count`` windows are taken evenly spaced over the stream so they cover many articles.
No BOS token is added: position 0 of a window is an ordinary token, as in the reference figures.
"""

from __future__ import annotations

import bz2
from typing import Any

import numpy as np

from gscore.data.assets import asset_path

DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SPLITS = ("calibration", "evaluation")


def load_articles() -> list[str]:
    """Cleaned article texts in dump order, redirects and empty pages dropped."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = asset_path("gensim", DUMP, "pip install gensim==4.4.0")
    articles = []
    with bz2.open(path, "rb") as handle:
        for _title, text, _page_id in extract_pages(handle):
            if not text or text.lstrip().lower().startswith("#redirect"):
                continue
            cleaned = filter_wiki(text).strip()
            if cleaned:
                articles.append(cleaned)
    return articles


def split_articles(articles: list[str], split: str) -> list[str]:
    """The articles of ``split``: calibration = index % 10 == 0, evaluation = the rest."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [a for i, a in enumerate(articles) if (i % 10 == 0) == (split == "calibration")]


def token_windows(tokenizer: Any, articles: list[str], length: int, count: int) -> np.ndarray:
    """``count`` non-overlapping windows of ``length`` tokens, evenly spaced: int32 ``[count, length]``."""
    ids = np.asarray(tokenizer.encode("\n\n".join(articles)).ids, dtype=np.int32)
    available = len(ids) // length
    if count > available:
        raise ValueError(f"asked for {count} windows of {length} tokens; the text holds only {available}")
    starts = np.linspace(0, available - 1, count).round().astype(int) * length
    return np.stack([ids[s : s + length] for s in starts])
