"""Checkpoints that explain and check themselves, written atomically."""

from gscore.io.checkpoint import DESCRIPTION_KEY, load_checkpoint, read_description, save_checkpoint

__all__ = ["DESCRIPTION_KEY", "load_checkpoint", "read_description", "save_checkpoint"]
