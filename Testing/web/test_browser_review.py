"""Issue #16 item 8 in a real browser: SegCorrect's review is no longer blind. The raw /
corrected / final toggle changes what the slice view draws, a legend gives the segments'
colours, rows are numbered as the slice views number slices and 'go' links both ways (a row
moves the view; the slider marks the row), the accept / reject buttons of a 48-slice table
stay inside the drawer, and the progress bar moves while the models load.

A server of its own (fresh: nothing of the engine loaded yet, as for a user's first run), on a
48-slice cardiac phantom and a damaged mask of it (the corrector then changes many slices)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clinicalai.web.page_driver import (free_port, launch_server, open_app_page, open_file, open_tool, segmentation_id, set_state, stop_server,
                                        view_box, view_pixels, wait_for_server)

pytestmark = pytest.mark.browser

N_SLICES = 48
N_SHORT = 12  # the evidence strategy's run (the slowest strategy)
TOKEN = "review-token-0123456789abcdef"


@pytest.fixture(scope="module")
def review_server(tmp_path_factory):
    from clinicalai.phantoms.cardiac import cardiac_case, cardiac_segments
    from clinicalai.segcorrect.corruptions import corrupt_volume
    from clinicalai.volume.io import write_volume

    data = tmp_path_factory.mktemp("review") / "data"
    data.mkdir()
    for n_slices in (N_SLICES, N_SHORT):  # heart48.nii.gz, heart48_bad.seg.nrrd; heart12...
        case = cardiac_case(2, n_slices=n_slices, size=(96, 96))
        write_volume(case.image, data / f"heart{n_slices}.nii.gz")
        bad, _ = corrupt_volume(np.asarray(case.labels.array), seed=3, probability=1.0, kinds=["holes", "blobs", "missing"])
        write_volume(case.labels.with_array(bad.astype(np.uint8)), data / f"heart{n_slices}_bad.seg.nrrd",
                     segments=cardiac_segments())
    port = free_port()
    log = data.parent / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = launch_server(data, port, log, ["--token", TOKEN], env=env)
    url = wait_for_server(proc, port, log, token=TOKEN, timeout_s=120)
    yield {"url": url, "data": data}
    stop_server(proc)


@pytest.fixture(scope="module")
def review_page(browser, review_server):
    context, pg = open_app_page(browser, review_server["url"], TOKEN)
    yield pg
    context.close()


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def wait_state(page, expression: str, timeout_ms: float = 30_000) -> None:
    """Wait until the JavaScript ``expression`` of ``s`` (``window.trame.state``) is true."""
    page.wait_for_function(f"() => {{ const s = window.trame.state; return {expression}; }}", timeout=timeout_ms)


def wait_changed_view(page, before: np.ndarray, what: str) -> np.ndarray:
    """The Red view's pixels once they differ from ``before`` (the server streams frames)."""
    for _ in range(40):
        page.wait_for_timeout(250)
        now = view_pixels(page, "Red")
        if now.shape == before.shape and (np.abs(now - before).max(axis=-1) >= 40).sum() > 20:
            return now
    raise AssertionError(f"the Red view did not change: {what}")


@pytest.fixture(scope="module")
def reviewed(review_page):
    """The damaged mask corrected on the 48-slice image, the progress the page saw recorded."""
    page = review_page
    assert open_file(page, "heart48.nii.gz") == ""
    assert open_file(page, "heart48_bad.seg.nrrd") == ""
    open_tool(page, "segcorrect")
    set_state(page, "ca_segcorrect_input_seg", segmentation_id(page, "ca_segcorrect_input_segs", "heart48_bad"))
    # every (progress, status) the page receives during the run
    page.evaluate("""() => { window.caSeen = [];
        window.trame.state.watch(['ca_segcorrect_progress', 'ca_segcorrect_status'],
                                 (p, s) => window.caSeen.push([p, s])); }""")
    page.click("#segcorrect-run")
    wait_state(page, "s.get('ca_segcorrect_runs') > 0 || s.get('ca_segcorrect_error')", timeout_ms=300_000)
    assert not state(page, "ca_segcorrect_error")
    return page.evaluate("() => window.caSeen")


def test_progress_moves_while_the_models_load(reviewed):
    loading = [(p, s) for p, s in reviewed if s and "loading" in s]
    assert loading, f"the page never said what it was loading: {reviewed[:10]}"
    assert all(p > 0 for p, _ in loading), f"the bar sat at 0 % while loading: {loading}"
    assert any("model" in s for _, s in loading) or any("engine" in s for _, s in loading)


def test_rows_numbered_from_one_and_go_links_both_ways(review_page, reviewed):
    page = review_page
    rows = state(page, "ca_segcorrect_rows")
    assert [r["slice"] for r in rows] == list(range(1, N_SLICES + 1))
    # 'go' on a row: the Red view shows that slice, and the row is marked as the one on screen
    i = 30
    page.locator(f"#segcorrect-go-{i}").scroll_into_view_if_needed()
    page.click(f"#segcorrect-go-{i}")
    wait_state(page, f"s.get('ca_segcorrect_shown_slice') === {rows[i]['slice']}")
    assert "ca-row-current" in page.locator(f"#segcorrect-table .ca-row-{i}").get_attribute("class")
    assert page.locator("#segcorrect-table .ca-row-current").count() == 1
    # the view's slider, one step: the next or previous slice's row is marked instead
    thumb = view_box(page, "Red").locator(".slice-slider .v-slider-thumb").first
    thumb.focus()
    page.keyboard.press("ArrowUp")
    wait_state(page, f"[{rows[i - 1]['slice']}, {rows[i + 1]['slice']}].includes(s.get('ca_segcorrect_shown_slice'))")
    j = state(page, "ca_segcorrect_shown_slice") - 1
    page.wait_for_function(f"() => document.querySelector('#segcorrect-table .ca-row-{j}').classList.contains('ca-row-current')")
    assert "ca-row-current" not in page.locator(f"#segcorrect-table .ca-row-{i}").get_attribute("class")
    # the slider to its far end: the marked row is scrolled into the table's view
    thumb.focus()
    page.keyboard.press("Home")
    wait_state(page, f"[1, {N_SLICES}].includes(s.get('ca_segcorrect_shown_slice'))")
    j = state(page, "ca_segcorrect_shown_slice") - 1
    page.wait_for_function(
        """(j) => { const w = document.querySelector('#segcorrect-table .v-table__wrapper').getBoundingClientRect();
                    const r = document.querySelector('#segcorrect-table .ca-row-' + j);
                    if (!r || !r.classList.contains('ca-row-current')) return false;
                    const b = r.getBoundingClientRect();
                    return b.top >= w.top - 1 && b.bottom <= w.bottom + 1; }""", arg=j)


def test_accept_reject_inside_the_drawer_on_48_slices(review_page, reviewed):
    page = review_page
    drawer = page.locator(".v-navigation-drawer").first.bounding_box()
    for i in (0, N_SLICES - 1):
        for button in ("go", "accept", "reject"):
            loc = page.locator(f"#segcorrect-{button}-{i}")
            loc.scroll_into_view_if_needed()
            box = loc.bounding_box()
            assert box is not None and loc.is_visible()
            assert drawer["x"] <= box["x"] and box["x"] + box["width"] <= drawer["x"] + drawer["width"], (button, i, box, drawer)
    wrapper = page.locator("#segcorrect-table .v-table__wrapper")
    assert wrapper.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the table is wider than the panel"


def test_legend_lists_segments_with_their_colours(review_page, reviewed):
    from clinicalai.phantoms.cardiac import cardiac_segments

    page = review_page
    items = page.locator("#segcorrect-legend .ca-legend-item")
    assert items.all_inner_texts() == ["RV", "MYO", "LV"]
    shown = [items.nth(k).locator(".ca-legend-swatch").evaluate("e => getComputedStyle(e).backgroundColor") for k in range(3)]
    expected = ["rgb({}, {}, {})".format(*(int(round(255 * c)) for c in s["color"][:3])) for s in cardiac_segments()]
    assert shown == expected


def test_raw_corrected_final_toggle_changes_the_view(review_page, reviewed):
    page = review_page
    assert [item["value"] for item in state(page, "ca_segcorrect_layers")] == ["final", "raw", "corrected"]
    rows = state(page, "ca_segcorrect_rows")
    dice = next(c for c in rows[0] if "dice" in c.lower())
    # a slice where the corrector's proposal differs most from the damaged mask
    i = min((k for k, r in enumerate(rows) if r[dice] not in ("", None)), key=lambda k: float(rows[k][dice]))
    assert float(rows[i][dice]) < 0.9, rows[i]
    page.locator(f"#segcorrect-go-{i}").scroll_into_view_if_needed()
    page.click(f"#segcorrect-go-{i}")
    wait_state(page, f"s.get('ca_segcorrect_shown_slice') === {rows[i]['slice']}")
    page.click("#segcorrect-layer-raw")
    wait_state(page, "s.get('ca_segcorrect_layer') === 'raw'")
    page.wait_for_timeout(2500)  # the views settle (app.render_views)
    raw = view_pixels(page, "Red")
    page.click("#segcorrect-layer-corrected")
    corrected = wait_changed_view(page, raw, "the corrected mask differs from the damaged one on this slice")
    page.click("#segcorrect-layer-raw")
    wait_changed_view(page, corrected, "back to the raw mask")
    # a value the server did not offer is refused, and what is drawn stays
    set_state(page, "ca_segcorrect_layer", "everything")
    page.wait_for_function("() => (document.querySelector('#segcorrect-error') || {}).textContent?.includes('not one of the choices')")
    page.click("#segcorrect-layer-final")
    wait_state(page, "s.get('ca_segcorrect_layer') === 'final'")


def test_about_box_is_clinicalais_own_without_images(review_page):
    page = review_page
    assert page.locator("[title='About trame-slicer']").count() == 0
    page.click("#about-button")
    dialog = page.locator("#about-dialog")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    assert "ClinicalAI" in text and "not for clinical use" in text
    assert "trame-slicer v" not in text
    assert dialog.locator("img").count() == 0, "no image fetched from outside the server"
    page.click("#about-close")
    dialog.wait_for(state="hidden")


def test_typed_path_opens_whole_with_open_and_with_enter(review_page):
    """Typed as a user types, Open at once: the whole path is opened (it was cut short); Enter opens too."""
    page = review_page
    open_tool(page, "data")
    for submit in ("click", "enter"):
        set_state(page, "ca_message", "")
        set_state(page, "ca_error", "")
        set_state(page, "ca_data_path", "")
        field = page.locator("#data-path")
        field.press_sequentially("heart48_bad.seg.nrrd", delay=0)
        if submit == "click":
            page.click("#data-open")
        else:
            field.press("Enter")
        wait_state(page, "s.get('ca_message') || s.get('ca_error')")
        assert not state(page, "ca_error"), (submit, state(page, "ca_error"))
        assert "heart48_bad.seg.nrrd" in state(page, "ca_message"), submit


def test_evidence_strategy_offers_next_best_from_the_panel(review_page, reviewed):
    """The panel's correction selector reaches the engine: with "evidence" an invalid slice
    has ranked candidates and the row's "next best" swaps it in (with "gate" it says there is
    none); a strategy the server did not offer is refused before any run.

    Last in the file: it opens a short stack (the evidence strategy ranks candidates for every
    damaged slice; 12 slices show the same as 48 at a quarter of the time)."""
    page = review_page
    open_tool(page, "segcorrect")
    assert [item["value"] for item in state(page, "ca_segcorrect_strategies")] == ["gate", "evidence"]
    runs = state(page, "ca_segcorrect_runs")
    set_state(page, "ca_segcorrect_strategy", "everything")
    page.click("#segcorrect-run")
    page.wait_for_function("() => (document.querySelector('#segcorrect-error') || {}).textContent?.includes('not one of the choices')")
    assert state(page, "ca_segcorrect_runs") == runs
    assert open_file(page, f"heart{N_SHORT}.nii.gz") == ""
    assert open_file(page, f"heart{N_SHORT}_bad.seg.nrrd") == ""
    open_tool(page, "segcorrect")
    set_state(page, "ca_segcorrect_input_seg", segmentation_id(page, "ca_segcorrect_input_segs", f"heart{N_SHORT}_bad"))
    runs = state(page, "ca_segcorrect_runs")
    set_state(page, "ca_segcorrect_strategy", "evidence")
    set_state(page, "ca_segcorrect_error", "")  # the refusal above is read; the wait below is for this run
    page.click("#segcorrect-run")
    wait_state(page, f"s.get('ca_segcorrect_runs') > {runs} || s.get('ca_segcorrect_error')", timeout_ms=300_000)
    assert not state(page, "ca_segcorrect_error")
    rows = state(page, "ca_segcorrect_rows")
    dice = next(c for c in rows[0] if "dice" in c.lower())
    swapped = None
    for i in [k for k, r in enumerate(rows) if r[dice] not in ("", None)]:
        set_state(page, "ca_segcorrect_error", "waiting")
        page.locator(f"#segcorrect-next-{i}").scroll_into_view_if_needed()
        page.click(f"#segcorrect-next-{i}")
        wait_state(page, "s.get('ca_segcorrect_error') !== 'waiting'")
        if not state(page, "ca_segcorrect_error"):
            swapped = i
            break
        assert "no next best" in state(page, "ca_segcorrect_error")
    assert swapped is not None, "no corrected slice had a runner-up candidate"
    assert state(page, "ca_segcorrect_rows")[swapped]["decision"] == "corrected"
    set_state(page, "ca_segcorrect_strategy", "gate")
