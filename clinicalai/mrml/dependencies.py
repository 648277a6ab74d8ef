"""First-use check of the Python packages the engine needs inside Slicer, and the offer to
install them: torch through the PyTorch extension (``PyTorchUtils`` picks the CUDA build
that matches the driver), everything else through ``slicer.util.pip_install``, each after a
confirmation dialog. Called when the user first runs a module, never on import."""

from __future__ import annotations

import importlib.util
import logging
from typing import List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

#: (import name, pip requirement) of the engine's dependencies that Slicer does not ship. The
#: requirements are pyproject.toml's, word for word (``Testing/mrml/test_dependencies.py``
#: checks it, with :data:`NOT_INSTALLED_IN_SLICER`).
PIP_PACKAGES: Tuple[Tuple[str, str], ...] = (
    ("monai", "monai>=1.4"),
    ("pydantic", "pydantic>=2.5"),
    ("SimpleITK", "SimpleITK>=2.3"),
    ("pydicom", "pydicom>=3.0.1"),
    ("highdicom", "highdicom>=0.24"),
    ("nibabel", "nibabel>=5.0"),
    ("captum", "captum>=0.7"),
    ("onnxruntime", "onnxruntime>=1.17"),
    ("scipy", "scipy>=1.10"),
    ("sklearn", "scikit-learn>=1.3"),
    ("skimage", "scikit-image>=0.22"),
    ("einops", "einops>=0.7"),
)

#: pyproject.toml dependencies the Slicer modules do not install, and why
NOT_INSTALLED_IN_SLICER = {
    "torch": "comes from Slicer's PyTorch extension (the CUDA build that matches the driver)",
    "numpy": "ships with Slicer",
    "onnx": "only 'clinicalai export' writes ONNX; the modules run ONNX models with onnxruntime",
    "onnxscript": "only 'clinicalai export' (torch's ONNX exporter) needs it",
    "matplotlib": "only 'clinicalai evaluate generative' draws figures",
    "nilearn": "only the held-out MNI152 phantoms (tests, evaluation) need its templates",
    "dask": "only 'clinicalai batch' runs on Dask",
}


def missing_packages(packages: Optional[Sequence[Tuple[str, str]]] = None) -> List[str]:
    """pip requirements of the ``(import name, requirement)`` packages (default
    :data:`PIP_PACKAGES`) that cannot be imported here."""
    packages = PIP_PACKAGES if packages is None else packages
    return [req for name, req in packages if importlib.util.find_spec(name) is None]


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def ensure_dependencies() -> bool:
    """Offer to install what is missing (desktop Slicer); ``True`` when everything is there.

    torch comes from the PyTorch extension (Extensions Manager > "PyTorch"); if that
    extension is not installed the user is told to install it, and nothing else happens.
    """
    import slicer

    if not torch_installed():
        try:
            import PyTorchUtils  # the PyTorch extension's scripted module
        except ImportError:
            slicer.util.errorDisplay(
                "ClinicalAI needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
                "restart Slicer, and run again."
            )
            return False
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled():
            if not slicer.util.confirmOkCancelDisplay(
                "ClinicalAI needs PyTorch. Install it now (the CUDA build matching this computer's GPU "
                "driver, or the CPU build)? This downloads about 2 GB and can take several minutes."
            ):
                return False
            if torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.0") is None:
                slicer.util.errorDisplay("PyTorch could not be installed; see the Python console for details.")
                return False
    missing = missing_packages()
    if missing:
        if not slicer.util.confirmOkCancelDisplay(
            "ClinicalAI needs these Python packages, which are not installed in Slicer yet:\n\n"
            + "\n".join(missing)
            + "\n\nInstall them now with pip?"
        ):
            return False
        try:
            slicer.util.pip_install(list(missing))  # a list: each requirement passed as one argument
        except Exception as exc:  # pip's output is in the log; one message for the user
            log.exception("pip install failed")
            slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}")
            return False
        importlib.invalidate_caches()
    return True
