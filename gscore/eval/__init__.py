"""Evaluation of compressed networks: accuracy, agreement, perplexity."""

from gscore.eval.classification import predict_logits, top1_accuracy

__all__ = ["predict_logits", "top1_accuracy"]
