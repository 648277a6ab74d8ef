"""Tiny models trained the MONAI way (LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) ->
Spacingd -> intensity -> CropForegroundd), saved as a user would hand them to ClinicalAI, and
MONAI's own inference on them (the reference the engine must match).

Nothing here uses ClinicalAI to prepare, train or run the networks: only to write the
phantom NIfTI files (SimpleITK underneath) and, in the tests, to be compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

PIXDIM = (1.7, 1.6, 2.9)  # mm, (x, y, z) after Orientationd(RAS); extents avoid half-voxel ties
ROI = (16, 16, 16)
A_MIN, A_MAX = 40.0, 250.0
SEG_LABELS = {"0": "background", "1": "bright sphere", "2": "grey box"}
UNET_KWARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [8, 16, 32],
               "strides": [2, 2], "num_res_units": 1}
RESNET_KWARGS = {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 2, "widen_factor": 0.25}


def phantom(seed: int, shape_xyz=(36, 32, 20), spacing=(1.2, 1.3, 2.5), direction=None, origin=(-20.0, 15.0, -30.0),
            with_box: bool = True, with_sphere: bool = True):
    """A ``(Volume, labels Volume)`` pair in LPS: a bright sphere (label 1) and, optionally, a
    grey box (label 2) at random positions on noise."""
    from clinicalai.volume import Volume

    rng = np.random.default_rng(seed)
    nx, ny, nz = shape_xyz
    z, y, x = np.meshgrid(np.arange(nz) * spacing[2], np.arange(ny) * spacing[1], np.arange(nx) * spacing[0], indexing="ij")
    ext = np.array([nx * spacing[0], ny * spacing[1], nz * spacing[2]])
    image = rng.normal(30.0, 8.0, size=(nz, ny, nx))
    labels = np.zeros((nz, ny, nx), np.uint8)
    c = rng.uniform(0.3, 0.7, 3) * ext
    r = rng.uniform(6.0, 9.0)
    sphere = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r ** 2) & with_sphere
    if with_box:
        b0 = rng.uniform(0.1, 0.45, 3) * ext
        b1 = b0 + rng.uniform(9.0, 14.0, 3)
        box = (x > b0[0]) & (x < b1[0]) & (y > b0[1]) & (y < b1[1]) & (z > b0[2]) & (z < b1[2]) & ~sphere
        image[box] = rng.normal(120.0, 8.0, size=int(box.sum()))
        labels[box] = 2
    image[sphere] = rng.normal(210.0, 8.0, size=int(sphere.sum()))
    labels[sphere] = 1
    d = np.eye(3) if direction is None else np.asarray(direction)
    img = Volume(np.round(np.clip(image, 0, None)).astype(np.int16), spacing=spacing, origin=origin, direction=d, modality="MR")
    return img, img.with_array(labels, modality="SEG", units="label")


def write_pairs(folder: Path, seeds: List[int]) -> List[Dict[str, str]]:
    from clinicalai.volume import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for s in seeds:
        img, lab = phantom(s)
        write_volume(img, folder / f"img{s}.nii.gz")
        write_volume(lab, folder / f"lab{s}.nii.gz")
        items.append({"image": str(folder / f"img{s}.nii.gz"), "label": str(folder / f"lab{s}.nii.gz")})
    return items


def preprocessing_config(keys=("image",), crop: bool = True) -> List[dict]:
    """The bundle's preprocessing as JSON, the way MONAI bundles write it."""
    k = list(keys)
    steps = [
        {"_target_": "LoadImaged", "keys": k},
        {"_target_": "EnsureChannelFirstd", "keys": k},
        {"_target_": "Orientationd", "keys": k, "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": k, "pixdim": list(PIXDIM), "mode": ["bilinear", "nearest"][:len(k)]},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": A_MIN, "a_max": A_MAX, "b_min": 0.0,
         "b_max": 1.0, "clip": True},
    ]
    if crop:
        steps.append({"_target_": "CropForegroundd", "keys": k, "source_key": "image", "margin": 3})
    steps.append({"_target_": "EnsureTyped", "keys": k})
    return steps


def monai_transforms(keys=("image",), crop: bool = True, reader: Optional[str] = None):
    """The same steps as MONAI objects (what MONAI's ConfigParser would build)."""
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, EnsureTyped, LoadImaged,
                                  Orientationd, ScaleIntensityRanged, Spacingd)

    k = list(keys)
    steps = [
        LoadImaged(keys=k, reader=reader, image_only=True),
        EnsureChannelFirstd(keys=k),
        Orientationd(keys=k, axcodes="RAS"),
        Spacingd(keys=k, pixdim=PIXDIM, mode=["bilinear", "nearest"][:len(k)]),
        ScaleIntensityRanged(keys="image", a_min=A_MIN, a_max=A_MAX, b_min=0.0, b_max=1.0, clip=True),
    ]
    if crop:
        steps.append(CropForegroundd(keys=k, source_key="image", margin=3))
    steps.append(EnsureTyped(keys=k))
    return Compose(steps)


def train_segmenter(items: List[Dict[str, str]], iterations: int = 200, seed: int = 0):
    """A 3D MONAI UNet trained on ``items`` through MONAI's own pipeline (random 16^3
    crops, DiceCE, Adam); returns the network in eval mode."""
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import RandCropByPosNegLabeld
    from monai.utils import set_determinism

    set_determinism(seed)
    torch.manual_seed(seed)
    data = [monai_transforms(("image", "label"))(dict(it)) for it in items]
    crop = RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=ROI, pos=2, neg=1,
                                  num_samples=2, allow_smaller=True)
    crop.set_random_state(seed)
    net = UNet(**UNET_KWARGS)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for it in range(iterations):
        d = data[it % len(data)]
        patches = crop(d)
        x = torch.stack([p["image"].as_tensor() for p in patches]).float()
        y = torch.stack([p["label"].as_tensor() for p in patches]).round()
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    return net


def dice_per_label(a: np.ndarray, b: np.ndarray, labels=(1, 2)) -> Dict[int, float]:
    out = {}
    for k in labels:
        inter = np.logical_and(a == k, b == k).sum()
        total = (a == k).sum() + (b == k).sum()
        out[k] = float(2 * inter / total) if total else 1.0
    return out


def write_bundle(folder: Path, net, task: str = "segmentation", crop: bool = True) -> Path:
    """A MONAI bundle folder: configs/metadata.json, configs/inference.json, models/model.pt."""
    import torch

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    if task == "segmentation":
        out = {"type": "image", "format": "segmentation", "num_channels": 3, "spatial_shape": list(ROI),
               "channel_def": SEG_LABELS}
        net_def = {"_target_": "UNet", **UNET_KWARGS}
        inferer = {"_target_": "SlidingWindowInferer", "roi_size": list(ROI), "sw_batch_size": 2, "overlap": 0.25,
                   "mode": "gaussian"}
        post = [{"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": False},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@output_dir"}]
    else:
        out = {"type": "probabilities", "format": "classes", "num_channels": 2, "spatial_shape": [2],
               "channel_def": {"0": "no sphere", "1": "sphere"}}
        net_def = {"_target_": "monai.networks.nets.resnet10", **RESNET_KWARGS}
        inferer = {"_target_": "SimpleInferer"}
        post = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    meta = {"name": f"tiny-monai-{task}", "version": "0.1.0", "monai_version": "1.6.1",
            "task": task, "description": "trained in ClinicalAI's tests the MONAI way",
            "network_data_format": {"inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR",
                                                         "num_channels": 1, "spatial_shape": list(ROI)}},
                                    "outputs": {"pred": out}}}
    inference = {
        "imports": ["$import glob"], "bundle_root": ".", "output_dir": "$@bundle_root + '/eval'",
        "network_def": net_def, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_config(crop=crop)},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": post},
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=1))
    (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=1))
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def monai_segment(path: str, net, reader: Optional[str] = None):
    """MONAI's inference on one file: the bundle's preprocessing, sliding window, softmax,
    ``Invertd`` back onto the file's grid. Returns the ``(3, x, y, z)`` MetaTensor of
    probabilities on the file's grid (its affine set)."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import Activationsd, Compose, Invertd

    pre = monai_transforms(reader=reader)
    d = pre({"image": path})
    with torch.no_grad():
        d["pred"] = sliding_window_inference(d["image"][None].float(), ROI, 2, net, overlap=0.25, mode="gaussian")[0]
    post = Compose([Activationsd(keys="pred", softmax=True),
                    Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)])
    return post(d)["pred"]


def train_classifier(items: List[Dict[str, object]], iterations: int = 60, seed: int = 0):
    """A small MONAI ResNet10 trained to tell phantoms with a bright sphere (class 1) from
    those without, on whole volumes through MONAI's own pipeline (no crop)."""
    import torch
    from monai.networks.nets import resnet10
    from monai.utils import set_determinism

    set_determinism(seed)
    torch.manual_seed(seed)
    pre = monai_transforms(crop=False)
    xs = [pre({"image": it["image"]})["image"].as_tensor().float() for it in items]
    ys = torch.tensor([int(it["label"]) for it in items])
    net = resnet10(**RESNET_KWARGS)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for it in range(iterations):
        idx = [(2 * it) % len(xs), (2 * it + 1) % len(xs)]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.stack([xs[i] for i in idx])), ys[idx])
        loss.backward()
        opt.step()
    net.eval()
    return net


def monai_gradient(path: str, net, target: Optional[int] = None):
    """The gradient of the target logit w.r.t. the network input, computed on MONAI's
    preprocessed tensor and put back onto the file's grid with ``Invertd``; and the target."""
    from monai.transforms import Invertd

    pre = monai_transforms(crop=False)
    d = pre({"image": path})
    x = d["image"][None].as_tensor().float().requires_grad_(True)
    logits = net(x)
    k = int(logits.argmax(1)) if target is None else target
    logits[0, k].backward()
    d["grad"] = d["image"].clone()
    d["grad"].data = x.grad[0].detach()
    out = Invertd(keys="grad", transform=pre, orig_keys="image", nearest_interp=False)(d)["grad"]
    return out, k
