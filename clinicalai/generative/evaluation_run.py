"""``clinicalai evaluate generative``: everything :mod:`.evaluate` measures, for one model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence


from ..models import LoadedModel
from ..progress import ProgressCallback, report
from .data import GridSpec, brain_training_set, decode_labels
from .evaluate import latent_analysis, synthetic_anomaly_auroc
from .nets import default_top_fraction
from .package import sulcal_set, validate_brain

DEFAULT_SIZES = (200, 500, 800)


def evaluate_model(model: LoadedModel, out_dir: Path, n: int = 16, sizes: Optional[Sequence[int]] = None,
                   anomalies: Optional[Sequence[str]] = None, latent: bool = True, seed: int = 4242,
                   progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Evaluate ``model`` on ``n`` held-out phantoms; plots and volumes go to ``out_dir``.

    Returns a JSON-able report: ``synthetic_anomalies`` (rows of anomaly, size, AUROC),
    ``phantom_lesions`` (intensity models: AUROC healthy vs lesioned phantoms and map scores),
    ``latent`` (latent analyses; not for CycleGAN).
    """
    card = model.card
    kind = card.extra_get("generative_kind")
    kappa = float(card.extra_get("kappa", 1.0))
    spec = GridSpec.from_card(card)
    # synthetic anomalies and latent codes need window-sized volumes: a whole-field model's are
    # its centre windows (the phantom lesions below are read whole, as the anomaly workflow does)
    window = replace(spec, field_of_view="centre")
    top = float(card.extra_get("top_fraction", default_top_fraction(spec.input_kind)))
    module = model.module
    module.to("cpu")
    out_dir = Path(out_dir)
    out: Dict[str, Any] = {"model": card.name, "kind": kind, "phantoms": n, "seed": seed}
    report(progress, 0.05, "preparing held-out phantoms")
    if spec.input_kind == "labels":
        x = sulcal_set(n, spec, seed)
        fewest = int(min((decode_labels(v, spec.label_values) == 60).sum() for v in x))
        sizes = [s for s in (sizes or DEFAULT_SIZES) if s < fewest]
        out["sulcus_voxels_min"] = fewest
        groups = None
    else:
        x, _ = brain_training_set(n, window, seed=seed, pathological=False)
        sizes = list(sizes or DEFAULT_SIZES)
    report(progress, 0.2, "synthetic anomalies")
    out["synthetic_anomalies"] = synthetic_anomaly_auroc(module, kind, window, x, sizes=sizes, anomalies=anomalies,
                                                         seed=seed, kappa=kappa, top_fraction=top) if sizes else []
    if spec.input_kind == "intensity":
        report(progress, 0.5, "phantom lesions")
        out["phantom_lesions"] = validate_brain(module, kind, spec, n=n, seed=seed + 1, kappa=kappa, top_fraction=top)
    if latent and kind != "cyclegan":
        report(progress, 0.7, "latent-space analyses")
        if spec.input_kind == "intensity":
            # codes of healthy and lesioned phantoms, coloured by group in the plots
            xp, cases = brain_training_set(n, window, seed=seed + 2, pathological=None)
            groups = [int(c.pathological) for c in cases]
            x = xp
        out["latent"] = latent_analysis(module, kind, window, x, out_dir / "latent", groups=groups, seed=seed)
    report(progress, 1.0, "done")
    return out
