"""Finding the layer a CAM method explains: by name, or the last convolutional block."""

from __future__ import annotations

from typing import List, Optional

from ..errors import ModelError
from ..models.layout import inner_network

_CONV_TYPES_NAMES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "ConvTranspose3d")


def _is_conv(module) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def _contains_conv(module) -> bool:
    return any(_is_conv(m) for m in module.modules())


def _named(module):
    # layer names are those of the network itself, also inside the MONAI-layout wrapper
    return inner_network(module).named_modules()


def conv_layer_names(module) -> List[str]:
    """Names (as ``named_modules`` gives them) of every submodule that is or holds a convolution."""
    return [name for name, m in _named(module) if name and _contains_conv(m)]


def get_layer(module, name: str):
    """The submodule called ``name``; :class:`ModelError` listing the conv layers otherwise."""
    for n, m in _named(module):
        if n == name:
            return m
    names = conv_layer_names(module)
    shown = ", ".join(names[-25:]) if names else "none (this network has no convolution)"
    more = f" (last 25 of {len(names)})" if len(names) > 25 else ""
    raise ModelError(f"the network has no layer called {name!r}; convolutional layers{more}: {shown}")


def default_cam_layer(module, example) -> str:
    """The last convolutional block, the one rule of the engine (AttributionViewer, ``clinicalai
    explain`` and PetRecurrence): the last module, in execution order, that holds a convolution
    and outputs a spatial map (as many dimensions as the input) bigger than one voxel, leaving
    out a container whose output is smaller than that of the last such module inside it (a
    stack of blocks that pools after its last block, as ``features`` of ``CNN3D`` /
    ``VGG11_3D``: the map of the block itself is sharper). For MONAI's ResNet / SENet that is
    ``layer4``; for ``CNN3D`` the last block inside ``features``; for a plain ``Sequential``
    CNN the last conv.

    ``example`` is one input tensor ``(1, C, *spatial)`` (on the module's device), run once
    without gradients.
    """
    import torch

    candidates = {name: m for name, m in _named(module) if name and _contains_conv(m)}
    if not candidates:
        raise ModelError("Grad-CAM needs a convolutional layer, and this network has none")
    finished: List[tuple] = []
    handles = []
    for name, m in candidates.items():
        def hook(_m, _inp, out, name=name):
            if torch.is_tensor(out):
                finished.append((name, out.ndim, tuple(out.shape[2:])))
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    spatial = [(n, s) for n, nd, s in finished if nd == example.ndim]
    if not spatial:
        raise ModelError("no convolutional layer of this network outputs a spatial map; name one with --layer")
    blocks = [(n, s) for i, (n, s) in enumerate(spatial) if not _pools_after_inner(n, s, spatial[:i])]
    bigger = [n for n, s in blocks if any(d > 1 for d in s)]
    return (bigger or [n for n, _ in blocks])[-1]


def _pools_after_inner(name: str, shape: tuple, earlier: List[tuple]) -> bool:
    """Whether ``name``'s output is smaller than that of the last candidate inside it
    (``earlier``: the ``(name, spatial shape)`` that finished before it)."""
    inner = [s for n, s in earlier if n.startswith(name + ".")]
    return bool(inner) and any(d < i for d, i in zip(shape, inner[-1]))


def resolve_layer(module, layer: Optional[str], example) -> str:
    """``layer`` checked to exist, or the default CAM layer."""
    if layer:
        get_layer(module, layer)
        return layer
    return default_cam_layer(module, example)
