"""Tissue probability maps: a scale-free input for the attribution-constrained classifier.

Its own module because both the network input (:mod:`.preprocess`, ``input_mode: tpm``) and
the training data (:mod:`.constrained`) use it; in :mod:`.constrained` it closed an import
circle (core -> preprocess -> constrained -> core).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def tissue_probability_maps(image: np.ndarray, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    """Tissue probability maps ``(n_classes + 1, *shape)`` of one volume, instead of raw
    intensities: a Gaussian mixture (scikit-learn) fitted to the head's intensities after
    division by the head's median (brightest 3 % excluded from the fit), classes ordered by mean (CSF, grey,
    white matter), and a last
    "atypical" channel: the probability that a voxel lies more than 3 standard deviations from
    every tissue class (what no healthy tissue explains, e.g. a hyperintense lesion). Removes
    scale and bias differences between scans, as in the source thesis.
    """
    from sklearn.mixture import GaussianMixture

    a = np.asarray(image, dtype=np.float32)
    head = a > 0.2 * float(np.percentile(a, 99))
    a = a / float(np.median(a[head]))  # scale-free; bright lesions are not clipped
    values = a[head]
    if values.size < 10 * n_classes:
        raise InputError("the image has too few voxels above background for tissue probability maps")
    rng = np.random.default_rng(seed)
    # the brightest 3 % are left out of the fit so a (small) lesion cannot claim a component
    values = values[values <= np.percentile(values, 97)].reshape(-1, 1)
    sample = values[rng.choice(len(values), size=min(len(values), 20000), replace=False)]
    gmm = GaussianMixture(n_components=n_classes + 1, random_state=seed).fit(sample)
    order = np.argsort(gmm.means_.ravel())[1:]  # drop the darkest component (skull/partial volume)
    means = gmm.means_.ravel()[order]
    sds = np.sqrt(gmm.covariances_.reshape(-1)[order])
    post = gmm.predict_proba(a.reshape(-1, 1))[:, order]
    post = post / np.maximum(post.sum(1, keepdims=True), 1e-8)
    # two-sided tail probability of the closest class: small -> atypical
    z = np.min(np.abs(a.reshape(-1, 1) - means) / sds, axis=1)
    atypical = np.clip((z - 3.0) / 3.0, 0.0, 1.0) * (a.reshape(-1) > means.max())
    out = np.concatenate([post * (1 - atypical[:, None]), atypical[:, None]], axis=1)
    out[~head.reshape(-1)] = 0.0
    return np.moveaxis(out.reshape(*a.shape, n_classes + 1), -1, 0).astype(np.float32)
