"""A short corrector training run learns (loss falls well below its start), and the card it
would ship with is valid."""

import numpy as np

from clinicalai.models import parse_card
from clinicalai.phantoms.cardiac import CARDIAC_LABELS
from clinicalai.segcorrect.corrector import (
    CorrectorConfig, corrector_card, one_hot_stack, phantom_masks, train_corrector,
)


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
