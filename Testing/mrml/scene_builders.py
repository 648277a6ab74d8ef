"""Scene contents the MRML tests build the way Slicer's own modules would (on sys.path through
conftest.py, like slicer_stand_ins.py)."""


def sequence_of(scene, volumes, name, attributes=()):
    """A sequence node ``name`` whose items are ``volumes`` (index 0, 1, ...; the sequence keeps
    its own copies, as Slicer's plugins do). ``attributes``: one dict of node attributes per item
    (e.g. ``DICOM.instanceUIDs``)."""
    from clinicalai.mrml.volumes import add_volume_node

    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for k, volume in enumerate(volumes):
        item = add_volume_node(scene, volume, f"{name} {k}", display=False)
        for key, value in (dict(attributes[k]) if attributes else {}).items():
            item.SetAttribute(key, value)
        sequence.SetDataNodeAtValue(item, str(k))
        scene.RemoveNode(item)
    return sequence


def browse(ctx, sequence, selected=0):
    """The proxy node a new sequence browser shows ``sequence``'s item ``selected`` in, made by
    slicer-core's own Sequences logic."""
    import slicer

    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(ctx.scene)
    browser = ctx.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{sequence.GetName()} browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetSelectedItemNumber(selected)
    logic.UpdateProxyNodesFromSequences(browser)
    return browser.GetProxyNode(sequence)


def browsed_sequence(ctx, volumes, name, selected=0, attributes=()):
    """``volumes`` as items of a sequence ``name`` browsed in a proxy node, as Slicer's DICOM
    module shows a dynamic series and the Sequences module a 4D file: returns the proxy node,
    showing item ``selected`` (:func:`sequence_of`, :func:`browse`)."""
    return browse(ctx, sequence_of(ctx.scene, volumes, name, attributes), selected)
