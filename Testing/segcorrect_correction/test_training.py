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


def test_kl_warmup_auto_scales_with_the_run():
    """Issue #14: `--kl-warmup auto` warms up over 30 % of the run, so a short CPU run trains at
    the full KL weight for most of it (the study's 6420 never ended in 450 iterations)."""
    import pytest

    from clinicalai.errors import InputError
    from clinicalai.segcorrect.corrector_training import KL_WARMUP_FRACTION, resolve_kl_warmup

    assert resolve_kl_warmup("auto", 1500) == round(KL_WARMUP_FRACTION * 1500) == 450
    assert resolve_kl_warmup("AUTO", 2) == 1  # never 0 from auto
    assert resolve_kl_warmup("6420", 450) == 6420 and resolve_kl_warmup(0, 10) == 0
    for bad in ("soon", "-3", 2.5):
        with pytest.raises(InputError, match="kl-warmup"):
            resolve_kl_warmup(bad, 100)


def _tiny_validation(config):
    from clinicalai.segcorrect.corrector_training import CHECKPOINT_SEED, validation_batch

    vols = [v[:, ::4, ::4] for v in phantom_masks(2, seed=CHECKPOINT_SEED)]
    return validation_batch(vols, (), config, n_slices=24)


def test_best_checkpoint_is_kept_and_its_history_recorded():
    """Validation every 4 iterations once the warm-up (6) is over; the weights returned are
    those of the best-scoring pass, not the last one."""
    import torch

    from clinicalai.segcorrect.validity import label_dice

    volumes = [v[:, ::4, ::4] for v in phantom_masks(3, seed=500)]
    cfg = CorrectorConfig(iterations=30, kl_warmup=6, latent_channels=8, seed=1, validate_every=4)
    x, y = _tiny_validation(cfg)
    assert x.shape == (24, 4, 32, 32) and y.shape == (24, 32, 32)
    assert np.array_equal(_tiny_validation(cfg)[0], x)  # a fixed set: every pass scores the same slices
    model, history = train_corrector(volumes, cfg, log_every=5, validation=(x, y))
    assert history.validation_iterations == [7, 11, 15, 19, 23, 27, 29]  # after warm-up, and the last iteration
    assert history.best_iteration in history.validation_iterations and history.stopped_at is None
    best = history.validation_iterations.index(history.best_iteration)
    assert history.validation_dice[best] == max(history.validation_dice)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    assert round(label_dice(pred, y, (1, 2, 3)), 4) == history.validation_dice[best]
    assert len(history.validation_valid) == len(history.validation_dice)


def test_patience_stops_when_validation_does_not_improve():
    """The same weights scored twice are not better: with patience 1 the second pass stops."""
    from clinicalai.networks.nvae import NVAE
    from clinicalai.segcorrect.corrector_training import TrainingHistory, _BestCheckpoint

    cfg = CorrectorConfig(latent_channels=8, patience=1)
    model = NVAE(**cfg.network_kwargs()).eval()
    history = TrainingHistory()
    best = _BestCheckpoint(_tiny_validation(cfg), cfg, history, "cpu")
    assert best.check(model, 9) is False and history.best_iteration == 9
    assert best.check(model, 19) is True and history.best_iteration == 9
    assert history.validation_dice[0] == history.validation_dice[1]
    assert not model.training  # left as found


def test_shifted_case_changes_the_image_and_keeps_labels_and_grid():
    """`--shifted`: the image is moved away from the training family; the labels follow the
    geometry only (values kept), and with no geometric transform they are untouched."""
    from clinicalai.augment import augmentation_params
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.corrector_training import shift_case

    case = cardiac_case(7, "ED", n_slices=5, size=(140, 150))
    image, labels = shift_case(case, augmentation_params("strong", affine_prob=0.0), seed=3)
    assert np.array_equal(labels.array, case.labels.array)
    assert image.shape == case.image.shape and not np.allclose(image.array, case.image.array)
    for vol, ref in ((image, case.image), (labels, case.labels)):
        assert vol.spacing == ref.spacing and vol.origin == ref.origin and np.array_equal(vol.direction, ref.direction)
    image2, labels2 = shift_case(case, "strong", seed=3)
    assert labels2.shape == case.labels.shape and set(np.unique(labels2.array)) <= {0, 1, 2, 3}
    assert (labels2.array == 3).any()
    again = shift_case(case, "strong", seed=3)  # deterministic by seed
    assert np.array_equal(again[0].array, image2.array) and np.array_equal(again[1].array, labels2.array)


def test_shifted_segmenter_pairs_are_aligned_failures():
    """Shifted copies are harder for the bundled segmenter (lower Dice than on the plain
    images; the domain-randomised U-Net loses little, so no margin is asked); kept pairs are aligned (same shape, truth = the shifted labels framed on the output)."""
    from clinicalai.models import bundled_model, load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.corrector_training import segmenter_pairs, shifted_segmenter_pairs
    from clinicalai.segcorrect.validity import label_dice

    seg = load_model(bundled_model("cardiac-unet"), device="cpu")
    cases = [cardiac_case(610 + i, "ED", n_slices=6) for i in range(2)]
    plain = [label_dice(r, t, (1, 2, 3)) for r, t in segmenter_pairs(cases, seg)]
    pairs, dices = shifted_segmenter_pairs(cases, seg, 4, seed=0, min_dice=0.0)
    assert len(pairs) == len(dices) == 4
    assert np.mean(dices) < np.mean(plain)  # the shift makes it harder
    for (raw, truth), d in zip(pairs, dices):
        assert raw.shape == truth.shape == (6, 128, 128)
        assert set(np.unique(truth)) <= {0, 1, 2, 3}
        assert label_dice(raw, truth, (1, 2, 3)) == d
    kept, same = shifted_segmenter_pairs(cases, seg, 4, seed=0, min_dice=sorted(dices)[2])
    assert same == dices and len(kept) == sum(d >= sorted(dices)[2] for d in dices)
