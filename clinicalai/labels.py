"""What the GUIs show for the engine's keys: the one mapping from a result key (a JSON field,
a table column: ``pointing_game``, ``background_SUVmean``) to the words a clinician reads as a
table header or a row name. The keys themselves stay as they are in reports and scripts."""

from __future__ import annotations

from typing import Dict

#: result key -> header / row name; keys not here are shown with ``_`` as spaces (:func:`label`)
LABELS: Dict[str, str] = {
    # attribution map metrics (clinicalai.attribution.metrics.SCORE_KEYS)
    "dice": "Dice",
    "auroc": "AUROC",
    "pauc_fpr10": "pAUC (FPR <= 10 %)",
    "auprc": "AUPRC",
    "pointing_game": "pointing game",
    "positive_share": "share inside lesion",
    "spearman": "Spearman rho",
    "ssim": "SSIM",
    # static PET parameters (clinicalai.pet.static.StaticResult.to_dict)
    "SUVmax": "SUVmax",
    "background_SUVmean": "background SUVmean",
    "max_Bq/mL": "max (Bq/mL)",
    "background_mean_Bq/mL": "background mean (Bq/mL)",
    "TBRmax": "TBRmax",
    "TBRmean": "TBRmean",
    "lesion_voi": "lesion VOI",
    "lesion_volume_ml": "lesion volume (mL)",
    "uptake_units": "uptake units",
    # attribution methods (DESIGN.md names, clinicalai.attribution.methods.METHODS) and the
    # anomaly map: the names of the map nodes ("<image> - Integrated gradients")
    "gradient": "Gradient",
    "gradient-x-input": "Gradient x input",
    "integrated-gradients": "Integrated gradients",
    "expected-gradients": "Expected gradients",
    "smoothgrad": "SmoothGrad",
    "guided-backprop": "Guided backprop",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "occlusion": "Occlusion",
    "anomaly": "anomaly map",
    # SegCorrect's per-slice table (clinicalai.segcorrect.pipeline.SliceDecision.table_row)
    "Dice raw vs corrected": "Dice raw / corrected",
}


def label(key: str) -> str:
    """The words shown for ``key``: :data:`LABELS`, else the key with ``_`` as spaces."""
    return LABELS.get(key, str(key).replace("_", " "))
