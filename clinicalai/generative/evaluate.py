"""The cortical-folding evaluation, made quantitative, and the latent-space analyses.

- :func:`synthetic_anomaly_auroc`: insert anomalies into healthy volumes (a sulcal structure of
  N voxels removed, as the study's ``bbox_max`` 200 / 500 / 800; or a hot / cold blob of N
  voxels) and measure how well the volume score separates them from the untouched volumes
  (AUROC per anomaly and size).
- :func:`latent_analysis`: interpolation ``u + k/n (v - u)`` between two codes (a sequence of
  NIfTI volumes), the volume of the mean code, PCA and t-SNE of the codes with k-means
  silhouettes (PNG), latent dimensions ranked by how much a small change moves the
  reconstruction, the share of dead dimensions, a traversal along the top dimension, and for
  sulcal skeletons the reconstructed-to-input sulcus thickness ratio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..volume import Volume, write_volume
from .data import GridSpec, decode_labels, one_hot
from .nets import TOP_FRACTION, Codec, to_numpy
from .sulci import insert_blob, remove_structure
from .train import volume_scores


def _auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(y, np.r_[neg, pos]))


def synthetic_anomaly_auroc(module, kind: str, spec: GridSpec, healthy: np.ndarray,
                            sizes: Sequence[int] = (200, 500, 800), anomalies: Optional[Sequence[str]] = None,
                            seed: int = 0, kappa: float = 1.0, top_fraction: float = TOP_FRACTION) -> List[Dict[str, Any]]:
    """AUROC of the volume score, untouched healthy volumes vs the same with an anomaly.

    Args:
        healthy: ``(N, C, z, y, x)`` held-out healthy volumes on the model grid.
        sizes: anomaly sizes in voxels of the model grid.
        anomalies: ``remove`` (label models), ``hot``, ``cold`` (intensity models); default
            by the model's input kind.

    Returns: one row per (anomaly, size): ``anomaly``, ``size``, ``auroc``, ``n``,
    mean scores of both groups.
    """
    labels = spec.input_kind == "labels"
    anomalies = list(anomalies or (["remove"] if labels else ["hot", "cold"]))
    base = volume_scores(module, kind, healthy, labels, kappa, top_fraction=top_fraction)
    rows = []
    for a in anomalies:
        if (a == "remove") != labels:
            raise ValueError(f"anomaly {a!r} does not apply to {spec.input_kind} volumes")
        for size in sizes:
            rng = np.random.default_rng(seed + int(size))
            modified = []
            for x in healthy:
                if labels:
                    lab = decode_labels(x, spec.label_values)
                    new, _ = remove_structure(lab, int(size), rng)
                    modified.append(one_hot(new, spec.label_values))
                else:
                    new, _ = insert_blob(x[0], int(size), rng, a, mask=x[0] > 0.5 * np.percentile(x[0], 98))
                    modified.append(new[None])
            scores = volume_scores(module, kind, np.stack(modified), labels, kappa, top_fraction=top_fraction)
            rows.append({"anomaly": a, "size": int(size), "auroc": _auroc(base, scores), "n": int(len(healthy)),
                         "score_healthy": float(base.mean()), "score_anomalous": float(scores.mean())})
    return rows


def template_volume(spec: GridSpec) -> Volume:
    """An empty volume on the model grid (identity direction, origin 0) for generated volumes."""
    return Volume(np.zeros(spec.shape_zyx, np.float32), spacing=spec.spacing_mm)


def _as_volume(decoded: np.ndarray, spec: GridSpec) -> Volume:
    t = template_volume(spec)
    if spec.input_kind == "labels":
        return t.with_array(decode_labels(decoded, spec.label_values), modality="SEG", units="label")
    return t.with_array(decoded[0].astype(np.float32))


def sulcus_thickness(labels_zyx: np.ndarray, sulcus_value: int = 60) -> float:
    """Mean thickness of the sulci in voxels: sulcus voxels / voxels of their 3D skeleton."""
    from skimage.morphology import skeletonize

    s = np.asarray(labels_zyx) == sulcus_value
    n_skel = int(skeletonize(s).astype(bool).sum())
    return float(s.sum()) / n_skel if n_skel else float("nan")


@torch.no_grad()
def latent_analysis(module, kind: str, spec: GridSpec, x: np.ndarray, out_dir: Path,
                    groups: Optional[Sequence[int]] = None, n_interp: int = 8, delta: float = 0.1,
                    dead_fraction: float = 0.01, n_traversal: int = 7, seed: int = 0) -> Dict[str, Any]:
    """Latent-space analyses of ``x`` (``(N, C, z, y, x)`` on the model grid) into ``out_dir``.

    Args:
        groups: an integer group per volume (e.g. 0 healthy, 1 anomalous) to colour the plots.
        delta: the small change of one code dimension used to rank dimensions.
        dead_fraction: a dimension is dead when moving it by its spread over the data set
            changes the reconstruction by less than this fraction of the largest such change.

    Files: ``interpolation/step_KK.nii.gz``, ``mean_code.nii.gz``, ``traversal/dim_D_step_KK.nii.gz``,
    ``codes_pca_tsne.png``, ``kmeans_silhouette.png``. Returns the numbers (JSON-able).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    module.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec = Codec(module, kind)
    xt = torch.from_numpy(np.asarray(x, np.float32))
    z = torch.cat([codec.encode(xt[i:i + 8]) for i in range(0, len(xt), 8)])
    n, dims = z.shape
    summary: Dict[str, Any] = {"n_volumes": int(n), "latent_size": int(dims)}

    # interpolation u + k/n (v - u) between the first two volumes
    (out_dir / "interpolation").mkdir(exist_ok=True)
    u, v = z[0:1], z[1:2]
    for k in range(n_interp + 1):
        dec = to_numpy(codec.decode(u + (k / n_interp) * (v - u)))[0]
        write_volume(_as_volume(dec, spec), out_dir / "interpolation" / f"step_{k:02d}.nii.gz")
    write_volume(_as_volume(to_numpy(codec.decode(z.mean(0, keepdim=True)))[0], spec), out_dir / "mean_code.nii.gz")

    # dimensions ranked by how much a small change moves the reconstruction
    ref = codec.decode(z[: min(n, 4)])
    spread = z.std(0) if n > 1 else torch.ones(dims)
    sensitivity = np.zeros(dims)
    effect = np.zeros(dims)
    for i in range(dims):
        for arr, step in ((sensitivity, delta), (effect, float(spread[i]))):
            zz = z[: min(n, 4)].clone()
            zz[:, i] += step
            diff = (codec.decode(zz) - ref).reshape(len(zz), -1).norm(dim=1).mean().item()
            arr[i] = diff / delta if arr is sensitivity else diff
    order = np.argsort(-sensitivity)
    dead = effect < dead_fraction * max(effect.max(), 1e-12)
    summary["dimension_ranking"] = [{"dim": int(i), "sensitivity": float(sensitivity[i]), "effect": float(effect[i])}
                                    for i in order[: min(20, dims)]]
    summary["dead_dimensions"] = int(dead.sum())
    summary["dead_share"] = float(dead.mean())

    # traversal along the most sensitive dimension
    top = int(order[0])
    (out_dir / "traversal").mkdir(exist_ok=True)
    zm = z.mean(0, keepdim=True)
    for k, t in enumerate(np.linspace(-3, 3, n_traversal)):
        zz = zm.clone()
        zz[0, top] += float(t) * float(spread[top] if spread[top] > 0 else 1.0)
        write_volume(_as_volume(to_numpy(codec.decode(zz))[0], spec), out_dir / "traversal" / f"dim_{top}_step_{k:02d}.nii.gz")
    summary["traversal_dimension"] = top

    # PCA / t-SNE of the codes, k-means silhouettes
    codes = to_numpy(z)
    colours = np.zeros(n) if groups is None else np.asarray(groups)
    pca = PCA(n_components=2, random_state=seed).fit(codes)
    p2 = pca.transform(codes)
    tsne = TSNE(n_components=2, perplexity=max(2.0, min(30.0, (n - 1) / 3)), random_state=seed, init="pca").fit_transform(codes)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, pts, title in ((axes[0], p2, "PCA of latent codes"), (axes[1], tsne, "t-SNE of latent codes")):
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=colours, cmap="coolwarm", s=18)
        ax.set_title(title)
    if groups is not None:
        fig.colorbar(sc, ax=axes, label="group")
    fig.savefig(out_dir / "codes_pca_tsne.png", dpi=100)
    plt.close(fig)
    sil = {}
    for k in range(2, min(6, n - 1) + 1):
        lab = KMeans(n_clusters=k, n_init=5, random_state=seed).fit_predict(codes)
        if len(set(lab)) > 1:
            sil[k] = float(silhouette_score(codes, lab))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(list(sil), list(sil.values()), "o-")
    ax.set_xlabel("k (k-means clusters)")
    ax.set_ylabel("silhouette")
    fig.tight_layout()
    fig.savefig(out_dir / "kmeans_silhouette.png", dpi=100)
    plt.close(fig)
    summary["pca_explained_variance"] = [float(v) for v in pca.explained_variance_ratio_]
    summary["kmeans_silhouette"] = {str(k): v for k, v in sil.items()}

    if spec.input_kind == "labels" and 60 in spec.label_values:
        recon = to_numpy(torch.cat([codec.decode(z[i:i + 8]) for i in range(0, n, 8)]))
        ratios = []
        for xi, ri in zip(np.asarray(x), recon):
            t_in = sulcus_thickness(decode_labels(xi, spec.label_values))
            t_out = sulcus_thickness(decode_labels(ri, spec.label_values))
            if np.isfinite(t_in) and np.isfinite(t_out):
                ratios.append(t_out / t_in)
        summary["thickness_ratio"] = float(np.mean(ratios)) if ratios else None
    return summary
