"""A short corrector training run learns (loss falls well below its start), and the card it
would ship with is valid."""

import numpy as np

from clinicalai.models import parse_card
from clinicalai.phantoms.cardiac import CARDIAC_LABELS
from clinicalai.segcorrect.corrector import one_hot_stack
from clinicalai.segcorrect.corrector_training import CorrectorConfig, corrector_card, phantom_masks, train_corrector


def test_short_training_run_learns():
    # 32 x 32 (every 4th pixel of the 128 x 128 network frame) keeps this to seconds
    volumes = [v[:, ::4, ::4] for v in phantom_masks(3, seed=500)]
    cfg = CorrectorConfig(iterations=30, kl_warmup=15, latent_channels=8, seed=1)
    model, history = train_corrector(volumes, cfg, log_every=5)
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert np.isfinite(history.kl).all()
    assert not model.training


def test_context_input_stack():
    lab = np.zeros((3, 16, 16), np.int64)
    lab[1, 4:8, 4:8] = 3
    x = one_hot_stack(lab, 4, context=True)
    assert x.shape == (3, 12, 16, 16)
    assert x[0, 0].all()  # before the first slice: background only
    assert x[0, 8 + 3, 5, 5] == 1  # slice 0's "next" is slice 1, with its LV
    assert x[2, 8 + 0].all()  # after the last slice: background only
    assert np.allclose(x.reshape(3, 3, 4, 16, 16).sum(axis=2), 1)


def test_card_is_valid_and_says_synthetic():
    card = parse_card(corrector_card(CorrectorConfig(context=True), CARDIAC_LABELS), "c.json")
    assert card.task == "mask-correction" and card.synthetic_demo
    assert card.input.channels == 12 and card.training["beta"] == [1.0, 1.0, 5.0]
    assert [lab.name for lab in card.labels] == ["RV", "MYO", "LV"]


def test_segmenter_outputs_become_aligned_training_pairs():
    """`train corrector --segmenter`: the segmenter's masks of the training images, framed as
    the corrector sees them at inference, paired with the ground truth of the same pixels."""
    from clinicalai.models import bundled_model, load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.corrector_training import segmenter_pairs
    from clinicalai.segcorrect.pipeline import label_dice

    cases = [cardiac_case(600 + i, "ED", n_slices=6) for i in range(2)]
    seen = []
    pairs = segmenter_pairs(cases, load_model(bundled_model("cardiac-unet"), device="cpu"),
                            progress=lambda f, m: seen.append(f))
    assert len(pairs) == 2 and seen[-1] == 1.0
    for raw, truth in pairs:
        assert raw.shape == truth.shape == (6, 128, 128)
        assert set(np.unique(truth)) <= {0, 1, 2, 3} and (truth == 3).any()
        # the bundled segmenter is good on phantoms, so an aligned pair agrees closely;
        # a pair framed on different boxes would not
        assert label_dice(raw, truth, (1, 2, 3)) > 0.8
    # and a training run takes them (30 % of samples) and still learns
    volumes = [t[:, ::4, ::4] for _, t in pairs]
    small = [(r[:, ::4, ::4], t[:, ::4, ::4]) for r, t in pairs]
    model, history = train_corrector(volumes, CorrectorConfig(iterations=20, kl_warmup=10, latent_channels=8, seed=2),
                                     pairs=small, log_every=5)
    assert history.loss[-1] < history.loss[0]
