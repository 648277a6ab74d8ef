"""Data panel: open a volume from the ``--data`` folder or upload one, as an image, a label map /
mask or a segmentation ("Open as": the user's choice, checked on the server, else guessed from
the content by :func:`clinicalai.mrml.masks.open_file_as`). A mask never replaces the image on
show: it is attached to the image whose grid it shares and drawn over it when that is the image
on show.

Every file is first tried in a throw-away process (:mod:`clinicalai.web.probe`): a malformed
file that would crash Slicer's native reader is refused with a message instead of taking the
server down. The probe runs on a worker thread, so the page stays live while it reads."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from ...errors import ClinicalAIError, InputError
from ...mrml import masks
from ...pet.dynamic import parse_static_window
from ...volume.bids_pet import bids_pet_sidecar
from ...volume.dicom_seg import is_dicom_seg_file
from .. import security
from ..probe import ProbeRefused
from .base import Panel

_UPLOAD_JS = "window.clinicalaiUpload($event.target)"  # serve/upload.js


#: what the file list says of each entry (``DataRoot.list_images`` kinds) before it is opened:
#: whether a NIfTI / NRRD volume is an image or a mask is known only from its voxels, read (in
#: the probe's child process) when it is opened, not for every file listed
LISTED_KIND_TITLES = {"dicom": "DICOM series", "segmentation": "segmentation (.seg.nrrd)",
                      "dicom-seg": "segmentation (DICOM SEG)",
                      "file": "volume: image or mask, guessed when opened"}


#: the time-point chooser's value for "the static PET of a window of a dynamic PET's frames"
STATIC_CHOICE = "static"


class DataPanel(Panel):
    key = "data"
    title = "Open data"

    def __init__(self, app) -> None:
        super().__init__(app)
        # series / series_items / series_of: the series of the DICOM folder last opened that
        # holds several (the page chooses one; checked against the offer); frame / frame_items /
        # frame_of: likewise the time points of the 4D file last opened (and, for a dynamic BIDS-PET,
        # STATIC_CHOICE with static_window: the minutes after injection whose frames are averaged)
        self.set(files=[], path="", uploading=False, open_as="", series="", series_of="", frame="", frame_of="",
                 static_window="")
        self.offer(series_items=[], frame_items=[])
        # what a file can be opened as: recorded on the server too (Panel.offer / Panel.choice)
        self.offer(open_as_items=[{"title": t, "value": v} for v, t in masks.OPEN_AS_TITLES.items()])
        #: mask nodes (segmentations, label maps) opened from files, by relative path
        self.segmentations: dict = {}
        #: what each file opened so far was opened as (an OPEN_AS_* kind), by relative path
        self.opened_as: dict = {}
        self.refresh()

    def build_ui(self) -> None:
        from trame.widgets import client

        client.ClientTriggers(mounted=self.refresh)  # a new page sees the folder as it is now
        with v3.VCard(variant="flat"):
            v3.VCardTitle("Open data")
            v3.VCardSubtitle(f"from {self.app.data_root.root}")
            with v3.VCardText():
                with html.Div(classes="d-flex align-center"):
                    # Open and Enter send the text as the page has it: the state sync of the
                    # field lags behind typing, and Open sent a path cut short
                    typed = (self.open_clicked, f"[{self.k('path')}]")
                    v3.VTextField(
                        v_model=(self.k("path"),),
                        label="path inside the data folder",
                        density="compact",
                        hide_details=True,
                        id="data-path",
                        classes="mr-2",
                        v_on_keyup_enter=typed,
                    )
                    v3.VBtn("Open", id="data-open", click=typed, color="primary")
                self._part_chooser("series", "series of ")
                self._part_chooser("frame", "time point of ")
                v3.VTextField(
                    v_if=(f"{self.k('frame')} === '{STATIC_CHOICE}'",),
                    v_model=(self.k("static_window"),),
                    label="static window: minutes after injection, START-END",
                    placeholder="the window of your protocol's static scan, e.g. 10-30",
                    persistent_placeholder=True,
                    density="compact",
                    hide_details=True,
                    id="data-static-window",
                    classes="mt-2",
                )
                v3.VSelect(
                    label="open as",
                    items=(self.k("open_as_items"),),
                    v_model=(self.k("open_as"),),
                    density="compact",
                    hide_details=True,
                    id="data-open-as",
                    classes="mt-2",
                )
                with v3.VList(density="compact", max_height="40vh", style="overflow-y:auto", id="data-files"):
                    v3.VListItem(
                        v_for=f"item in {self.k('files')}",
                        key="item.path",
                        title=("item.path",),
                        subtitle=("item.kind",),
                        click=(self.open_clicked, "[item.path]"),
                        classes="ca-data-file",
                    )
                with html.Div(classes="d-flex align-center mt-2"):
                    v3.VBtn("Refresh", click=self.refresh, variant="tonal", size="small", classes="mr-2")
                    html.Label("Upload:", classes="text-caption mr-2")
                    html.Input(
                        type="file",
                        id="data-upload",
                        accept=",".join(security.IMAGE_SUFFIXES) + ",.gz",
                        raw_attrs=[f'@change="{_UPLOAD_JS}"'],
                        disabled=(self.k("uploading"),),
                        classes="text-caption",
                    )
                html.Div(
                    f"uploads go to {security.UPLOAD_DIR}/ (up to {self.app.config.max_upload_mb:g} MiB; "
                    ".nii, .nii.gz, .nrrd, .seg.nrrd, DICOM SEG .dcm, zipped DICOM)",
                    classes="text-caption mt-1",
                )

    def _part_chooser(self, name: str, label: str) -> None:
        """The chooser of which part of the file last opened to open (a series of a study
        folder, a time point of a 4D file): shown while the server offers ``<name>_items``."""
        v3.VSelect(
            v_if=(f"{self.k(name + '_items')}.length",),
            label=(f"'{label}' + {self.k(name + '_of')}",),
            items=(self.k(name + "_items"),),
            v_model=(self.k(name),),
            density="compact",
            hide_details=True,
            id=f"data-{name}",
            classes="mt-2",
        )

    # actions -----------------------------------------------------------------
    def refresh(self) -> None:
        files = self.app.data_root.list_images()
        for item in files:
            known = self.opened_as.get(item["path"])
            item["kind"] = f"opened as {masks.OPEN_AS_TITLES[known]}" if known else LISTED_KIND_TITLES[item["kind"]]
        self.set(files=files)

    def open_clicked(self, relative: str) -> None:
        self._schedule_open(relative)

    def on_uploaded(self, relative: str) -> None:
        self.refresh()
        self._schedule_open(relative)

    def _schedule_open(self, relative: Any) -> None:
        # a task, not an awaited trigger: wslink handles one message of a connection at a time
        self.app.event_loop().create_task(self.open_path(relative))

    async def open_path(self, relative: Any) -> Optional[Any]:
        """Open ``relative`` (inside --data) into the scene; errors go to the message line."""
        try:
            if not isinstance(relative, str):
                raise InputError("give the path of a file inside the data folder")
            path, kind = self._kind(relative)
            open_as = self.choice("open_as", "open_as_items", "open as")
            series_uid = (self.choice("series", "series_items", "series") or None) if self.get("series_of") == relative else None
            chosen_frame = self.choice("frame", "frame_items", "time point") if self.get("frame_of") == relative else ""
            window = parse_static_window(self.get("static_window")) if chosen_frame == STATIC_CHOICE else None
            frame = int(chosen_frame) if chosen_frame not in ("", STATIC_CHOICE) else None
            # the probe (seconds, a child process) runs on a worker thread: the page stays live
            await asyncio.get_running_loop().run_in_executor(None, self.app.prober.check, path, kind, relative, series_uid,
                                                             frame, window)
            # again, now: cached (instant) unless the file was replaced while it was probed
            self.app.prober.check(path, kind, relative, series_uid, frame, window)
            opened = self._open(relative, path, open_as, series_uid, frame, window)
        except ProbeRefused as exc:
            if exc.series:  # a folder of several series: offer them, and open the one chosen
                self._offer_series(relative, exc.series)
                self.app.info(f"{relative} holds {len(exc.series)} DICOM series: choose one under 'series of "
                              f"{relative}', then Open again")
            elif exc.frames:  # a 4D file (a cine, an fMRI): offer its time points
                # a dynamic PET with its BIDS sidecar: its static scan first (what PetRecurrence takes)
                # (a DICOM series holds time points only as a dynamic PET series)
                dynamic_pet = kind == "dicom" or (kind == "volume" and bids_pet_sidecar(path) is not None)
                static = [{"title": "static PET: the mean of the frames in a window", "value": STATIC_CHOICE}] if dynamic_pet else []
                self.offer(frame_items=static + [{"title": f"time point {k}", "value": str(k)} for k in range(exc.frames)])
                self.set(frame="", frame_of=relative)
                self.app.info(f"{relative} holds {exc.frames} time points: choose "
                              + ("the static PET of a window, or one time point," if dynamic_pet else "one")
                              + f" under 'time point of {relative}', then Open again")
            else:
                self.app.error(str(exc))
            return None
        except ClinicalAIError as exc:
            self.app.error(str(exc))
            return None
        except Exception as exc:  # a reader error on a user's file: one line, server stays up
            self.app.error(f"{relative}: cannot be opened ({type(exc).__name__}: {exc})")
            return None
        self.app.info(opened.message)
        return opened.node

    def _offer_series(self, relative: str, series: list) -> None:
        items = [{"title": f"{s['description'] or 'no description'} ({s['modality'] or '?'}, {s['files']} files)",
                  "value": s["uid"]} for s in series]
        self.offer(series_items=items)
        self.set(series="", series_of=relative)

    def _kind(self, relative: str) -> tuple:
        """``(path, probe kind)`` of ``relative``, or why this app does not open it."""
        path = self.app.data_root.existing(relative)
        if path.is_dir():
            return path, "dicom"
        if security.image_suffix(path.name) in (None, ".zip"):
            raise InputError(f"{relative}: not an image this app opens (.nii, .nii.gz, .nrrd, .seg.nrrd, a DICOM SEG or a DICOM folder)")
        if path.name.lower().endswith(".dcm"):
            if not is_dicom_seg_file(path):
                raise InputError(f"{relative}: one file of a DICOM series; open its folder (a single .dcm opens when it is a DICOM SEG)")
            return path, "dicom-seg"
        if path.name.lower().endswith(".seg.nrrd"):
            return path, "segmentation"
        return path, "volume"

    def _open(self, relative: str, path: Any, open_as: str, series_uid: Optional[str] = None,
              frame: Optional[int] = None, static_window: Optional[tuple] = None) -> masks.OpenedFile:
        """Load ``path`` (probed already) into the scene as ``open_as`` ("" = guessed): an image
        is shown; a mask is drawn over the image on show when it is one of its masks."""
        opened = masks.open_file_as(self.app.context, path, open_as, current=self.app.volume_node, shown=relative,
                                    series_uid=series_uid, frame=frame, static_window=static_window)
        self.opened_as[relative] = opened.kind
        self.refresh()
        if opened.kind == masks.OPEN_AS_IMAGE:
            self.app.show_volume(opened.node)
            return opened
        self.segmentations[relative] = opened.node
        if opened.image is not None and opened.image is self.app.volume_node:
            if opened.kind == masks.OPEN_AS_SEGMENTATION:
                self.app.edit_segmentation(opened.node, open_editor=False)
            else:
                masks.show_label_outline(self.app.context.scene, opened.node)
            self.app.render_views()
        for panel in self.app.panels.values():
            panel.on_segmentation_opened(relative, opened.node)
        return opened
