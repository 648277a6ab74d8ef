"""SegCorrect: short-axis cardiac MRI (RV / MYO / LV) and CT duct segmentation with MONAI
networks, and NVAE mask correction that never makes a good mask worse.

Import the submodules directly (``clinicalai.segcorrect.segmenter``, ``.preprocess``, ...);
this package imports nothing heavy so that ``import clinicalai.segcorrect`` stays cheap.
"""

#: bundled demo models used when none is chosen (CLI, demo, Slicer and browser panels)
DEFAULT_SEGMENTER = "cardiac-unet"
DEFAULT_CORRECTOR = "cardiac-nvae"
DEFAULT_CONTEXT_CORRECTOR = "cardiac-nvae-context"
