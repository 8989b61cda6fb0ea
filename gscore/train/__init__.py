"""Plain MindSpore training loops used by the examples, benches and QAT plugins."""

from gscore.train.classifier import train_classifier

__all__ = ["train_classifier"]
