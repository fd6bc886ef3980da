"""Test-split scores from label and probability arrays: the maths behind `reports/metrics.json`.

Pure functions of numpy arrays. Counting and precision/recall/F1 are scikit-learn's
(``zero_division=0``: a class never predicted scores 0, not NaN); calibration (reliability bins,
ECE), which scikit-learn lacks, is computed here. scikit-learn is imported where it is used, so
importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_CLASSES = 10
# The summary figures logged to MLflow as test_<name>; the registry reads test_accuracy.
SUMMARY_KEYS = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "ece",
    "mean_confidence",
    "nll",
    "n_errors",
)


def _labels(values: np.ndarray, name: str, n_classes: int) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array")
    if values.size and (values.min() < 0 or values.max() >= n_classes):
        raise ValueError(f"{name} holds labels outside 0..{n_classes - 1}")
    return values.astype(np.int64)


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES
) -> np.ndarray:
    """Counts ``[actual, predicted]``: row i holds the digits of class i by predicted class."""
    from sklearn import metrics

    # Checked here: scikit-learn would silently drop labels outside ``labels``.
    y_true = _labels(y_true, "y_true", n_classes)
    y_pred = _labels(y_pred, "y_pred", n_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if not y_true.size:  # scikit-learn refuses empty input
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    counts = metrics.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    return counts.astype(np.int64)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix ``[actual, predicted]``.

    Precision is TP / (TP + FP): the share of the digits *predicted* as the class that are right
    (column); recall is TP / (TP + FN): the share of the digits *of* the class found (row).
    """
    from sklearn import metrics

    n_classes = confusion.shape[0]
    support = confusion.sum(axis=1).astype(np.int64)
    if not support.sum():  # scikit-learn refuses all-zero weights
        zeros = np.zeros(n_classes)
        return {"precision": zeros, "recall": zeros.copy(), "f1": zeros.copy(), "support": support}
    # Each cell (actual, predicted) is one pair of labels weighted by its count: the scores come
    # from the same counts as the confusion matrix, without expanding them back to every digit.
    actual, predicted = np.divmod(np.arange(n_classes * n_classes), n_classes)
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        actual,
        predicted,
        labels=np.arange(n_classes),
        sample_weight=confusion.ravel(),
        average=None,
        zero_division=0,
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES
) -> dict[str, Any]:
    """Accuracy, macro and support-weighted precision/recall/F1, and the per-class table."""
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    scores = per_class_scores(confusion)
    support = scores["support"]
    total = int(support.sum())
    weights = support / total if total else np.zeros(n_classes)
    metrics: dict[str, Any] = {"accuracy": float(np.trace(confusion) / total) if total else 0.0}
    # scikit-learn's average="macro" and "weighted", from the per-class scores already at hand.
    for name in ("precision", "recall", "f1"):
        metrics[f"macro_{name}"] = float(scores[name].mean())
        metrics[f"weighted_{name}"] = float((scores[name] * weights).sum())
    metrics["per_class"] = {
        str(label): {
            "precision": float(scores["precision"][label]),
            "recall": float(scores["recall"][label]),
            "f1": float(scores["f1"][label]),
            "support": int(support[label]),
        }
        for label in range(n_classes)
    }
    return metrics


def reliability_bins(
    probabilities: np.ndarray, y_true: np.ndarray, n_bins: int
) -> list[dict[str, float]]:
    """Non-empty equal-width bins of the top probability: range, count, mean confidence, accuracy.

    Bin b holds confidences in (b/n, (b+1)/n]; the top probability is never 0.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = _labels(y_true, "y_true", probabilities.shape[1])
    if len(probabilities) != len(y_true):
        raise ValueError(f"{len(probabilities)} probability rows but {len(y_true)} labels")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        if members.any():
            bins.append(
                {
                    "lower": b / n_bins,
                    "upper": (b + 1) / n_bins,
                    "count": int(members.sum()),
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                }
            )
    return bins


def expected_calibration_error(
    probabilities: np.ndarray, y_true: np.ndarray, n_bins: int = 15
) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over equal-width confidence bins."""
    bins = reliability_bins(probabilities, y_true, n_bins)
    total = sum(b["count"] for b in bins)
    if not total:
        return 0.0
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total)


def negative_log_likelihood(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """Mean -log p(true class), probabilities floored so a confident error stays finite."""
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(y_true)), y_true]
    return float(-np.log(np.maximum(picked, 1e-12)).mean()) if len(y_true) else 0.0


def evaluation_metrics(
    probabilities: np.ndarray, y_true: np.ndarray, n_bins: int
) -> dict[str, Any]:
    """Everything `reports/metrics.json` holds, from class probabilities and true labels."""
    y_pred = np.asarray(probabilities).argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, np.asarray(probabilities).shape[1])
    per_class = metrics.pop("per_class")
    metrics["ece"] = expected_calibration_error(probabilities, y_true, n_bins)
    metrics["nll"] = negative_log_likelihood(probabilities, y_true)
    metrics["mean_confidence"] = float(np.asarray(probabilities).max(axis=1).mean())
    metrics["n_test"] = len(y_true)
    metrics["n_errors"] = int((y_pred != y_true).sum())
    metrics["per_class"] = per_class
    return metrics


def worst_errors(probabilities: np.ndarray, y_true: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the misclassified digits, most confident mistakes first, at most ``limit``."""
    y_pred = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    order = np.argsort(-probabilities[wrong, y_pred[wrong]], kind="stable")
    return wrong[order[:limit]]
