"""Checkpoints that explain themselves and are written atomically; Golden Stick's layout both ways."""

from gscore.io.checkpoint import DESCRIPTION_KEY, load_checkpoint, load_parameters, read_description, save_checkpoint
from gscore.io.goldenstick import load_goldenstick, save_goldenstick
from gscore.io.loaded import check_loaded, unloaded_parameters

__all__ = [
    "DESCRIPTION_KEY",
    "check_loaded",
    "load_checkpoint",
    "load_goldenstick",
    "load_parameters",
    "read_description",
    "save_checkpoint",
    "save_goldenstick",
    "unloaded_parameters",
]
