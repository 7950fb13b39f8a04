"""Multi-label classification: a label is predicted when its logit is above the threshold (0, i.e.
probability 0.5); micro / macro / weighted F1 over labels and the exact-match (subset) accuracy.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score


class MultilabelF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Pedregosa et al. (2011). Scikit-learn: Machine Learning in Python. JMLR 12.",
            inputs_description=(
                "predictions: per-label logits; references: per-label 0/1; threshold on logits (default 0)"
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.0):
        predicted = (np.asarray(predictions, dtype=np.float32) > threshold).astype(int)
        gold = np.asarray(references, dtype=int)
        scores = {"subset_accuracy": accuracy_score(gold, predicted)}
        for average in ("micro", "macro", "weighted"):
            scores[f"{average}_f1"] = f1_score(gold, predicted, average=average, zero_division=0)
        return {k: float(v) for k, v in scores.items()}
