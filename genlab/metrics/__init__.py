"""Evaluation metrics (math written once) and `evaluate`, the one entry point."""

from genlab.metrics.evaluate import Report, evaluate

__all__ = ["evaluate", "Report"]
