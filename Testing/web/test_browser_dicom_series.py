"""A DICOM folder holding several series (a study exported from a PACS), in a real browser:
Open offers its series instead of refusing the folder, the one chosen opens (named after its
description), and a series the server did not offer is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clinicalai.web.page_driver import open_file, set_state, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def test_a_study_folder_offers_its_series_and_opens_the_one_chosen(page, web_server, tmp_path):
    from clinicalai.volume import Volume
    from clinicalai.volume.dicom_writer import write_dicom_series

    study = web_server["data"] / "study"
    study.mkdir()
    cine = web_server["cases"]["cardiac"].image
    for description, volume in (("cine SAX", cine.with_array(np.round(cine.array * 1000).astype(np.int16), modality="MR")),
                                ("late enhancement", Volume(np.full((3, 40, 48), 300, np.int16), spacing=(1.5, 1.5, 8.0),
                                                            modality="MR"))):
        folder = write_dicom_series(volume, tmp_path / description.replace(" ", "_"), series_description=description)
        for f in folder.iterdir():
            shutil.copy(f, study / f"{description[:4].strip()}_{f.name}")
    try:
        assert open_file(page, "study") == ""
        assert "holds 2 DICOM series" in state(page, "ca_message")
        offered = state(page, "ca_data_series_items")
        titles = [item["title"] for item in offered]
        assert len(titles) == 2
        assert any(t.startswith("late enhancement (MR, 3 files)") for t in titles), titles
        page.wait_for_selector("#data-series")  # the chooser appears with the offer
        late = next(item["value"] for item in offered if item["title"].startswith("late"))
        # a series the server did not offer: refused, nothing opened
        set_state(page, "ca_data_series", "1.2.3.4.5")
        assert "series" in open_file(page, "study")
        set_state(page, "ca_data_series", late)
        assert open_file(page, "study") == ""
        wait_text(page, "#volume-name", "^study_late_enhancement")
    finally:
        set_state(page, "ca_data_series", "")
