"""Generative models of healthy anatomy and the anomaly maps they give (issue #7).

- :func:`anomaly` / :class:`AnomalyResult`: map, score and healthy reconstruction of a volume;
- :func:`list_anomaly_models`: the anomaly-detection models a GUI can offer;
- :mod:`.train`, :mod:`.package`: training (``clinicalai train generative``);
- :mod:`.evaluate`: synthetic anomalies (AUROC per size) and latent-space analyses;
- :mod:`.sulci`: sulcal-skeleton phantoms (the cortical-folding study's input).
"""

from .anomaly import DEFAULT_MODEL, AnomalyResult, anomaly, list_anomaly_models, resolve_anomaly_model
from .nets import KINDS

__all__ = ["DEFAULT_MODEL", "KINDS", "AnomalyResult", "anomaly", "list_anomaly_models", "resolve_anomaly_model"]
