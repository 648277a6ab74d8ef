"""Latent-space search (Painchaud et al. 2020) as a candidate source of strategy="evidence"."""

from __future__ import annotations

import numpy as np

from clinicalai.segcorrect.candidates import Evidence, candidates_for_slice
from clinicalai.segcorrect.validity import CARDIAC_VALUES, check_slice

from .test_candidates import _probabilities

V = CARDIAC_VALUES


def _corrector():
    from clinicalai.models import load_model

    return load_model("cardiac-nvae", device="cpu")


def _broken_case():
    """A 5-slice phantom, one slice's myocardium speckled away (invalid), and probabilities
    that point at the truth (0.9 on the true label)."""
    from clinicalai.phantoms.cardiac import cardiac_case

    case = cardiac_case(7, size=(96, 96), n_slices=5)
    truth = case.labels.array.astype(np.int64)
    z = int(np.argmax([(truth[i] == 2).sum() for i in range(truth.shape[0])]))
    noisy = truth.copy()
    rng = np.random.default_rng(0)
    myo = np.argwhere(truth[z] == 2)
    drop = myo[rng.random(len(myo)) < 0.5]
    noisy[z, drop[:, 0], drop[:, 1]] = 0
    assert not check_slice(noisy[z]).valid
    probs = np.stack([_probabilities(truth[i], sharp=0.9) for i in range(truth.shape[0])], axis=1)
    return case, truth, noisy, z, probs


def test_latent_search_returns_only_valid_candidates_and_is_seeded():
    from clinicalai.segcorrect.pipeline import _latent_search

    case, truth, noisy, z, probs = _broken_case()
    cor = _corrector()
    module = cor.torch_module("test")
    a = _latent_search(noisy, case.labels, cor, module, [z], probs, 6, seed=3)
    b = _latent_search(noisy, case.labels, cor, module, [z], probs, 6, seed=3)
    c = _latent_search(noisy, case.labels, cor, module, [z], probs, 6, seed=4)
    assert list(a) == [z] and len(a[z]) == 6
    assert a[z][0][0] == "latent search: segmenter probabilities"
    for (na, la), (nb, lb) in zip(a[z], b[z]):
        assert na == nb
        np.testing.assert_array_equal(la, lb)  # same seed, same decodings
    assert any(not np.array_equal(la, lc) for (_, la), (_, lc) in zip(a[z][1:], c[z][1:]))  # the seed matters
    assert np.array_equal(a[z][0][1], c[z][0][1])  # the mean decode draws no noise
    # the decodings compete only where valid
    from clinicalai.segcorrect.latent import valid_decodings

    kept = valid_decodings(a[z], V, noisy[z])
    assert kept and all(check_slice(lab).valid for _, lab in kept)
    assert {n for n, _ in kept} <= {n for n, _ in a[z]}


def test_latent_search_agrees_better_with_the_probabilities_than_the_network_output():
    """Encoding the segmenter's soft probabilities, not the one-hot of its wrong argmax, lands
    the code nearer the evidence: the best latent candidate scores higher than the NVAE's
    plain output (which is farther from the probabilities, or invalid)."""
    from clinicalai.segcorrect.pipeline import _latent_search, _network_correction

    case, truth, noisy, z, probs = _broken_case()
    noisy[z] = truth[z]
    noisy[z][truth[z] == 3] = 1  # the cavity labelled RV: the one-hot input is far from the truth
    assert not check_slice(noisy[z]).valid
    cor = _corrector()
    module = cor.torch_module("test")
    network = _network_correction(noisy, case.labels, cor, module, {}, None, None)[z].astype(np.int64)
    latent = _latent_search(noisy, case.labels, cor, module, [z], probs, 4, seed=0)[z]
    evidence = Evidence((1, 2, 3), probs[:, z], noisy[z])
    ranking = candidates_for_slice(noisy[z], {"network": network}, V, evidence, extra=latent)
    scores = {c.source: c.score for c in ranking}
    latent_best = max((c for c in ranking if c.source.startswith("latent search") and c.validity.valid),
                      key=lambda c: c.score)
    net_valid = check_slice(network, V).valid
    assert (not net_valid) or latent_best.score > scores["network"] + 0.1
    assert latent_best.source == "latent search: segmenter probabilities"
    dice = lambda a: 2 * np.sum((a == 3) & (truth[z] == 3)) / (np.sum(a == 3) + np.sum(truth[z] == 3))  # noqa: E731
    assert dice(latent_best.labels) > dice(network) and dice(latent_best.labels) > 0.8


def test_a_valid_raw_slice_is_untouched_and_the_report_names_the_source():
    from clinicalai.segcorrect.pipeline import correct_mask

    case, truth, noisy, z, probs = _broken_case()
    cor = _corrector()
    result = correct_mask(case.labels.with_array(noisy), cor, strategy="evidence", probabilities=probs, seed=1)
    for s in result.slices:
        if s.index != z:
            np.testing.assert_array_equal(result.final.array[s.index], noisy[s.index])
    assert result.slices[z].source and result.slices[z].source in result.slices[z].reason
    assert check_slice(result.final.array[z]).valid
    assert "latent_s" in result.timings
    again = correct_mask(case.labels.with_array(noisy), cor, strategy="evidence", probabilities=probs, seed=1)
    np.testing.assert_array_equal(again.final.array, result.final.array)
    # a correct mask is left as it is
    clean = correct_mask(case.labels, cor, strategy="evidence", probabilities=probs)
    np.testing.assert_array_equal(clean.final.array, case.labels.array)


def test_the_context_nvae_competes_as_one_more_source():
    from clinicalai.models import load_model
    from clinicalai.segcorrect.pipeline import correct_mask

    case, truth, noisy, z, probs = _broken_case()
    ctx = load_model("cardiac-nvae-context", device="cpu")
    result = correct_mask(case.labels.with_array(noisy), _corrector(), strategy="evidence", probabilities=probs,
                          context_corrector=ctx, latent_decodes=0)
    ranking_all = result.slices[z].ranking
    assert ranking_all and ranking_all[0].validity.valid
    assert "latent_s" in result.timings
    # the context output is in the pool: with only it and the network, a context candidate exists
    from clinicalai.segcorrect.pipeline import _evidence_sources, GateSettings

    settings = GateSettings.of(_corrector(), True, None, 0.96, "evidence")
    srcs, latent = _evidence_sources(noisy, case.labels, _corrector(), None, settings, probs, ctx, 0, 0, {}, None)
    assert list(srcs) == ["context NVAE"] and srcs["context NVAE"].shape == noisy.shape and latent == {}


def test_cli_correct_with_the_context_corrector_reports_winners_and_runners_up(tmp_path, capsys):
    from clinicalai.cli import main
    from clinicalai.volume import read_volume, write_volume

    case, truth, noisy, z, probs = _broken_case()
    src = tmp_path / "mask.nii.gz"
    write_volume(case.labels.with_array(noisy.astype(np.uint8)), src)
    out, rep = tmp_path / "out.nii.gz", tmp_path / "r.json"
    assert main(["correct", str(src), "-o", str(out), "--context-corrector", "cardiac-nvae-context"]) != 0
    assert "needs --strategy evidence" in capsys.readouterr().err and not out.exists()
    assert main(["correct", str(src), "-o", str(out), "--strategy", "evidence", "--context-corrector",
                 "cardiac-nvae-context", "--report", str(rep)]) == 0
    import json

    row = json.loads(rep.read_text())["slices"][z]
    assert row["candidates"] and row["source"] == row["candidates"][0]["source"]
    assert row["source"] in row["reason"] and "next:" in row["reason"]
    assert check_slice(read_volume(out).array[z].astype(np.int64)).valid or row["decision"] == "kept raw"


def _cavity_as_rv():
    """The broken case with slice z's LV cavity labelled RV (invalid; its one-hot is far from
    the probabilities, which point at the truth)."""
    case, truth, noisy, z, probs = _broken_case()
    noisy[z] = truth[z]
    noisy[z][truth[z] == 3] = 1
    assert not check_slice(noisy[z]).valid
    return case, truth, noisy, z, probs


def test_latent_optimisation_walks_to_valid_decodings_that_the_evidence_supports_more():
    """Painchaud's search proper: Adam steps on the code of the probabilities' encoding, towards
    the probabilities; the valid decodings along the path score higher than the start (the
    decoding of the code itself), deterministically, and none come with the steps switched off."""
    from clinicalai.segcorrect.latent import OPTIMISED_SOURCE, PROBABILITIES_SOURCE, valid_decodings
    from clinicalai.segcorrect.pipeline import _latent_search

    case, truth, noisy, z, probs = _cavity_as_rv()
    cor = _corrector()
    module = cor.torch_module("test")
    found = _latent_search(noisy, case.labels, cor, module, [z], probs, 1, seed=0, steps=8)[z]
    names = [n for n, _ in found]
    steps = [OPTIMISED_SOURCE.format(k=k) for k in range(1, 9)]
    # the draw first, then the steps in order (a step that decodes as an earlier one is left out)
    assert names[0] == PROBABILITIES_SOURCE and len(names) > 2 and names[1:] == [n for n in steps if n in names]
    assert all(not np.array_equal(a, b) for i, (_, a) in enumerate(found) for _, b in found[:i])
    start = dict(found)[PROBABILITIES_SOURCE]
    evidence = Evidence((1, 2, 3), probs[:, z], noisy[z])
    region = np.ones(noisy[z].shape, bool)
    kept = valid_decodings(found[1:], V, noisy[z])
    assert kept and all(check_slice(lab).valid for _, lab in kept)
    assert max(evidence.score(lab, region) for _, lab in kept) > evidence.score(start, region) + 0.02
    # no noise is drawn: the same call gives the same path, whatever the seed
    again = _latent_search(noisy, case.labels, cor, module, [z], probs, 1, seed=5, steps=8)[z]
    for (na, la), (nb, lb) in zip(found, again):
        assert na == nb
        np.testing.assert_array_equal(la, lb)
    # the weights are left as they were: the network's plain output does not move
    assert all(p.grad is None for p in module.parameters())
    off = _latent_search(noisy, case.labels, cor, module, [z], probs, 1, seed=0, steps=0)[z]
    assert [n for n, _ in off] == [PROBABILITIES_SOURCE]


def test_correct_mask_ranks_the_optimised_decodings_and_latent_steps_0_switches_them_off():
    from clinicalai.segcorrect.pipeline import correct_mask

    case, truth, noisy, z, probs = _cavity_as_rv()
    cor = _corrector()
    on = correct_mask(case.labels.with_array(noisy), cor, strategy="evidence", probabilities=probs, latent_steps=8)
    off = correct_mask(case.labels.with_array(noisy), cor, strategy="evidence", probabilities=probs, latent_steps=0)
    assert check_slice(on.final.array[z]).valid
    assert any(c.source.startswith("latent search: optimised") for c in on.slices[z].ranking)
    assert not any(c.source.startswith("latent search: optimised") for c in off.slices[z].ranking)
    for s in on.slices:  # valid slices untouched either way
        if s.index != z:
            np.testing.assert_array_equal(on.final.array[s.index], noisy[s.index])


def test_cli_evaluate_segcorrect_with_the_context_corrector_as_an_evidence_source(tmp_path, capsys):
    """``evaluate segcorrect --strategy evidence --context-corrector C``: C competes as a candidate
    source of the corrector's run (as on ``segment``), it is not scored as a corrector of its own;
    with the gate it is (as before)."""
    import json

    from clinicalai.cli import main

    rep = tmp_path / "ev.json"
    args = ["evaluate", "segcorrect", "--phantoms", "2", "--seed", "1000"]
    assert main([*args, "--strategy", "evidence", "--context-corrector", "cardiac-nvae-context",
                 "--json", str(rep)]) == 0
    assert "with cardiac-nvae-context as a candidate source" in capsys.readouterr().out
    report = json.loads(rep.read_text())
    assert report["context_corrector"] == "cardiac-nvae-context" and report["latent_steps"] > 0
    assert list(report["variants"]) == ["cardiac-nvae"]
    won = report["variants"]["cardiac-nvae"]["gated"]["winning_sources"]
    assert any(s.startswith("context NVAE") for s in won), won  # its output won a slice of these two phantoms
    assert main(["evaluate", "segcorrect", "--phantoms", "1", "--strategy", "evidence", "--latent-steps", "-1"]) != 0
    assert "--latent-steps must be 0 or more" in capsys.readouterr().err
    gate = tmp_path / "gate.json"
    assert main(["evaluate", "segcorrect", "--phantoms", "1", "--seed", "1000", "--context-corrector",
                 "cardiac-nvae-context", "--json", str(gate)]) == 0
    assert list(json.loads(gate.read_text())["variants"]) == ["cardiac-nvae", "cardiac-nvae-context"]
