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

from ..errors import InputError
from ..outputs import atomic_output
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


def write_volume_sequence(volumes: Sequence[Volume], path: Path, index_values: Optional[Sequence[float]] = None,
                          index_name: str = "step", labelmap: bool = False) -> Path:
    """Write volumes on one grid as a Slicer volume sequence (``.seq.nrrd``), atomically.

    The file is a 4D NRRD whose first axis is the sequence (``kinds: list domain domain
    domain``, ``axis 0 index type`` / ``axis 0 index values``, ``DataNodeClassName``): Slicer's
    Sequences module opens it as one sequence with a browser to step through it.

    Args:
        volumes: at least one volume, all on the same grid (shape, spacing, origin, direction).
        path: output file; must end in ``.seq.nrrd``.
        index_values: the index of each item (default ``0, 1, ...``).
        index_name: name of the sequence axis shown by Slicer.
        labelmap: items are label maps (``vtkMRMLLabelMapVolumeNode``) rather than scalar volumes.

    Raises:
        InputError: no volume, grids differ, wrong suffix, or one index value per item missing.
    """
    import gzip

    path = Path(path)
    if not path.name.lower().endswith(".seq.nrrd"):
        raise InputError(f"a volume sequence is written as .seq.nrrd, got {path.name}")
    vols = list(volumes)
    if not vols:
        raise InputError("a volume sequence needs at least one volume")
    if any(not v.same_grid(vols[0], atol=1e-6) for v in vols[1:]):
        raise InputError("all volumes of a sequence must share one grid (shape, spacing, origin, direction)")
    values = list(range(len(vols))) if index_values is None else list(index_values)
    if len(values) != len(vols):
        raise InputError(f"{len(vols)} volumes but {len(values)} index values")
    dtype = np.int16 if labelmap else np.float32
    # numpy (z, y, x, item) in C order: the item index varies fastest, as NRRD axis 0
    data = np.stack([np.asarray(v.array) for v in vols], axis=-1).astype(np.dtype(dtype).newbyteorder("<"))
    ref = vols[0]
    d = np.asarray(ref.direction, float).reshape(3, 3)
    axes = " ".join("(" + ",".join(f"{c:.17g}" for c in d[:, i] * ref.spacing[i]) + ")" for i in range(3))
    nz, ny, nx = ref.shape
    header = "\n".join([
        "NRRD0004",
        f"type: {'short' if labelmap else 'float'}",
        "dimension: 4",
        "space: left-posterior-superior",
        f"sizes: {len(vols)} {nx} {ny} {nz}",
        f"space directions: none {axes}",
        "kinds: list domain domain domain",
        f'labels: "{index_name}" "" "" ""',
        "endian: little",
        "encoding: gzip",
        "space origin: (" + ",".join(f"{c:.17g}" for c in ref.origin) + ")",
        f"DataNodeClassName:={'vtkMRMLLabelMapVolumeNode' if labelmap else 'vtkMRMLScalarVolumeNode'}",
        "axis 0 index type:=numeric",
        "axis 0 index values:=" + " ".join(f"{float(v):.6g}" for v in values),
    ]) + "\n\n"
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(gzip.compress(data.tobytes(), compresslevel=6))
    return path


def _run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """Per voxel of ``mask``, the length of the run of ``True`` voxels through it along ``axis``
    (0 outside the mask). Same shape as ``mask``, int32."""
    m = np.moveaxis(np.asarray(mask, bool), axis, -1)
    flat = m.reshape(-1, m.shape[-1])
    padded = np.zeros((flat.shape[0], flat.shape[1] + 2), np.int8)
    padded[:, 1:-1] = flat
    step = np.diff(padded, axis=1)
    starts, ends = np.argwhere(step == 1), np.argwhere(step == -1)  # row-major: paired run by run
    lengths = ends[:, 1] - starts[:, 1]
    out = np.zeros(flat.shape, np.int32)
    if len(lengths):
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[np.repeat(starts[:, 0], lengths), np.repeat(starts[:, 1], lengths) + offsets] = np.repeat(lengths, lengths)
    return np.moveaxis(out.reshape(m.shape), -1, axis)


def sulcus_thickness(labels_zyx: np.ndarray, sulcus_value: int = 60) -> float:
    """Mean sulcus thickness in voxels (``nan`` without sulcus voxels).

    Per sulcus voxel, the shortest of its three axis-aligned runs of sulcus voxels (a sheet
    ``t`` voxels thick parallel to an axis plane gives ``t`` everywhere, a one-voxel skeleton
    1 whatever its orientation), averaged over the sulcus voxels. A 3D skeletonisation would
    not do: it thins an open sheet to curves or nothing, so sulcus voxels per skeleton voxel
    measures the sheet's extent, not its thickness.
    """
    s = np.asarray(labels_zyx) == sulcus_value
    if not s.any():
        return float("nan")
    runs = np.stack([_run_lengths(s, a)[s] for a in range(3)])
    return float(runs.min(0).mean())


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

    Files: ``interpolation/step_KK.nii.gz`` and the same steps as one Slicer sequence
    ``interpolation.seq.nrrd``, ``mean_code.nii.gz``, ``traversal/dim_D_step_KK.nii.gz``,
    ``codes_pca_tsne.png``, ``kmeans_silhouette.png``. Returns the numbers (JSON-able):
    ``dimension_ranking`` (top 20 by sensitivity), ``dead_dimensions``, ``dead_share``,
    ``dead_dimension_indices``, ``traversal_dimension``, ``pca_explained_variance``,
    ``kmeans_silhouette`` and, for sulcal skeletons, ``thickness_ratio``.
    """
    module.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec = Codec(module, kind)
    xt = torch.from_numpy(np.asarray(x, np.float32))
    z = torch.cat([codec.encode(xt[i:i + 8]) for i in range(0, len(xt), 8)])
    n, dims = z.shape
    summary: Dict[str, Any] = {"n_volumes": int(n), "latent_size": int(dims)}
    _write_interpolation(codec, z, spec, out_dir, n_interp)
    write_volume(_as_volume(to_numpy(codec.decode(z.mean(0, keepdim=True)))[0], spec), out_dir / "mean_code.nii.gz")
    ranking, order, spread = _rank_dimensions(codec, z, delta, dead_fraction)
    summary.update(ranking)
    top = int(order[0])
    _write_traversal(codec, z, spread, top, spec, out_dir, n_traversal)
    summary["traversal_dimension"] = top
    summary.update(_code_plots(to_numpy(z), groups, seed, out_dir))
    if spec.input_kind == "labels" and 60 in spec.label_values:
        summary["thickness_ratio"] = _thickness_ratio(codec, z, x, spec)
    return summary


# ---------------------------------------------------------------------------- steps of latent_analysis
def _write_interpolation(codec: Codec, z: torch.Tensor, spec: GridSpec, out_dir: Path, n_interp: int) -> None:
    """``interpolation/step_KK.nii.gz``: decoded ``u + k/n (v - u)`` between the first two codes,
    and the same steps as one Slicer sequence ``interpolation.seq.nrrd``."""
    (out_dir / "interpolation").mkdir(exist_ok=True)
    u, v = z[0:1], z[1:2]
    steps = []
    for k in range(n_interp + 1):
        dec = to_numpy(codec.decode(u + (k / n_interp) * (v - u)))[0]
        steps.append(_as_volume(dec, spec))
        write_volume(steps[-1], out_dir / "interpolation" / f"step_{k:02d}.nii.gz")
    # the same steps as one file Slicer opens as a sequence (index k/n from 0 at u to 1 at v)
    write_volume_sequence(steps, out_dir / "interpolation.seq.nrrd", [k / n_interp for k in range(n_interp + 1)],
                          index_name="k/n", labelmap=spec.input_kind == "labels")


def _rank_dimensions(codec: Codec, z: torch.Tensor, delta: float, dead_fraction: float):
    """Latent dimensions ranked by how much a small change (``delta``) moves the reconstruction
    of (up to) the first four codes, and the dead ones (moving them by their spread changes
    almost nothing). ``(summary entries, dimensions by decreasing sensitivity, spread (dims,))``."""
    n, dims = z.shape
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
    return {
        "dimension_ranking": [{"dim": int(i), "sensitivity": float(sensitivity[i]), "effect": float(effect[i])}
                              for i in order[: min(20, dims)]],
        "dead_dimensions": int(dead.sum()),
        "dead_share": float(dead.mean()),
        "dead_dimension_indices": [int(i) for i in np.flatnonzero(dead)],
    }, order, spread


def _write_traversal(codec: Codec, z: torch.Tensor, spread: torch.Tensor, top: int, spec: GridSpec,
                     out_dir: Path, n_traversal: int) -> None:
    """``traversal/dim_D_step_KK.nii.gz``: the mean code moved along dimension ``top`` from -3 to
    +3 times its spread."""
    (out_dir / "traversal").mkdir(exist_ok=True)
    zm = z.mean(0, keepdim=True)
    for k, t in enumerate(np.linspace(-3, 3, n_traversal)):
        zz = zm.clone()
        zz[0, top] += float(t) * float(spread[top] if spread[top] > 0 else 1.0)
        write_volume(_as_volume(to_numpy(codec.decode(zz))[0], spec), out_dir / "traversal" / f"dim_{top}_step_{k:02d}.nii.gz")


def _code_plots(codes: np.ndarray, groups: Optional[Sequence[int]], seed: int, out_dir: Path) -> Dict[str, Any]:
    """PCA and t-SNE of the codes ``(N, dims)`` (``codes_pca_tsne.png``) and k-means silhouettes
    for k = 2..6 (``kmeans_silhouette.png``); the PCA explained variance and the silhouettes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    n = len(codes)
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
    return {"pca_explained_variance": [float(v) for v in pca.explained_variance_ratio_],
            "kmeans_silhouette": {str(k): v for k, v in sil.items()}}


def _thickness_ratio(codec: Codec, z: torch.Tensor, x: np.ndarray, spec: GridSpec) -> Optional[float]:
    """Mean reconstructed-to-input sulcus thickness ratio over the volumes with sulci (sulcal skeletons)."""
    n = len(z)
    recon = to_numpy(torch.cat([codec.decode(z[i:i + 8]) for i in range(0, n, 8)]))
    ratios = []
    for xi, ri in zip(np.asarray(x), recon):
        t_in = sulcus_thickness(decode_labels(xi, spec.label_values))
        t_out = sulcus_thickness(decode_labels(ri, spec.label_values))
        if np.isfinite(t_in) and np.isfinite(t_out):
            ratios.append(t_out / t_in)
    return float(np.mean(ratios)) if ratios else None
