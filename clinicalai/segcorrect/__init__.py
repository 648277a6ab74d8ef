"""SegCorrect: short-axis cardiac MRI (RV / MYO / LV) and CT duct segmentation with MONAI
networks, and NVAE mask correction that never makes a good mask worse.

Import the submodules directly (``clinicalai.segcorrect.segmenter``, ``.preprocess``, ...);
this package imports nothing heavy so that ``import clinicalai.segcorrect`` stays cheap.
"""

#: bundled demo models used when none is chosen (CLI, demo, Slicer and browser panels)
DEFAULT_SEGMENTER = "cardiac-unet"
DEFAULT_CORRECTOR = "cardiac-nvae"
DEFAULT_CONTEXT_CORRECTOR = "cardiac-nvae-context"

#: 2D segmenter architectures ``clinicalai train segmenter --arch`` offers (MONAI networks;
#: :func:`clinicalai.segcorrect.segmenter.architecture_spec` builds their card entries)
ARCHITECTURES = ("unet", "resunet", "attention-unet", "swin-unetr")

#: cardiac phantom families ``clinicalai evaluate segmenter --family`` scores: the one the bundled
#: models were trained on, and the held-out one (:mod:`clinicalai.phantoms.cardiac_heldout`)
FAMILIES = ("training", "heldout")

#: default smallest mean Dice between a raw slice and the correction used on it (the gate of
#: :mod:`.pipeline`). Chosen on validation phantoms (seeds 1000-1019, 218 heart slices, 70 %
#: corrupted; the held-out evaluation uses seeds 3000-3019): with the bundled cardiac-nvae,
#: 0.90 degraded 7 slices by > 0.02 Dice (3.2 %), 0.95 degraded 3 (1.4 %), 0.96 degraded 1
#: (0.5 %) while still raising mean Dice and validity (0.394 -> 0.505), 0.97 improved only 3
MIN_AGREEMENT = 0.96

#: how an invalid slice is corrected (:func:`clinicalai.segcorrect.pipeline.correct_mask`): the
#: gate's smallest agreeing repair, or the valid candidate the evidence supports best
STRATEGIES = ("gate", "evidence")

#: Adam steps of the evidence strategy's latent-code optimisation per invalid slice
#: (:func:`clinicalai.segcorrect.latent.optimised_decodings`; 0: off); each is one decoder forward
#: and backward pass, so the cost grows linearly with it (6: docs/segcorrect.md, "Speed")
LATENT_STEPS = 6
