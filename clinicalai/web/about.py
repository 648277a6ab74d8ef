"""The page's (i) button: ClinicalAI's own About box, in place of trame-slicer's (its logo is
fetched from the internet, which a server on a closed hospital network cannot reach, so the
page showed a broken image, and it described trame-slicer, not this app)."""

from __future__ import annotations

from typing import Any

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from .. import __version__

#: what the About box says, one paragraph each (no image, no link out of the server)
ABOUT_TEXT = (
    f"ClinicalAI {__version__}: SegCorrect (cardiac segmentation and its correction, reviewed per "
    "slice), PetRecurrence (18F-FDOPA PET: recurrence vs treatment-related change, Grad-CAM) and "
    "AttributionViewer (attribution and anomaly maps), in 3D Slicer and in this browser page.",
    "The bundled models are synthetic demos trained on phantoms: not for clinical use.",
    "Slice views by 3D Slicer's libraries through trame-slicer (Kitware); page by trame.",
)


class AboutBox:
    """The (i) button of the app bar and its dialog; shown while ``is_about_visible`` (the
    layout's state) is true. Same two methods as trame-slicer's ``AboutDialog``."""

    def __init__(self, typed_state: Any) -> None:
        self.typed_state = typed_state

    def create_button(self) -> None:
        v3.VBtn(icon="mdi-information-outline", title="About ClinicalAI", id="about-button",
                click=lambda: self.set_visible(True))

    def create_dialog(self) -> None:
        with v3.VDialog(v_model=(self.typed_state.name.is_about_visible,), max_width=460):
            with v3.VCard(border=True, id="about-dialog"):
                v3.VCardTitle(f"ClinicalAI {__version__}")
                with v3.VCardText():
                    for paragraph in ABOUT_TEXT:
                        html.P(paragraph, classes="mb-2")
                with v3.VCardActions(classes="justify-end"):
                    v3.VBtn(text="Close", id="about-close", click=lambda: self.set_visible(False), variant="outlined")

    def set_visible(self, is_visible: bool) -> None:
        self.typed_state.data.is_about_visible = is_visible


def viewer_layout(server: Any, title: str) -> Any:
    """trame-slicer's ``ViewerLayout`` with :class:`AboutBox` for its About dialog."""
    from trame_slicer.app.ui import ViewerLayout

    class Layout(ViewerLayout):
        # ViewerLayout.__init__ makes its About dialog and at once draws its button and dialog
        # from this attribute: the setter hands it ours instead, before anything is drawn
        @property
        def about_dialog(self) -> AboutBox:
            return self._about_box

        @about_dialog.setter
        def about_dialog(self, _theirs: Any) -> None:
            self._about_box = AboutBox(self.typed_state)

    return Layout(server, title=title)
