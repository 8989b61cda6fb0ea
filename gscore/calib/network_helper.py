"""The NetworkHelper contract: how an algorithm drives a network it does not know.

Golden Stick's calibration asks the helper for model facts (``get_spec("seq_length")``)
and to run the network (``generate``). Weight-only round-to-nearest needs neither; the
activation and KV-cache calibrations of later algorithms do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class NetworkHelper(ABC):
    """Subclass per model family; gscore calls only these methods."""

    @abstractmethod
    def get_spec(self, name: str) -> Any:
        """A model fact by name (``batch_size``, ``seq_length``, ...), or None if unknown."""

    @abstractmethod
    def generate(self, network: Any, input_ids: Any, max_new_tokens: int = 1, **kwargs: Any) -> Any:
        """Run ``network`` on ``input_ids`` (int array ``[batch, seq]``) for calibration."""
