"""Scene contents the MRML tests build the way Slicer's own modules would (on sys.path through
conftest.py, like slicer_stand_ins.py)."""


def browsed_sequence(ctx, volumes, name, selected=0, attributes=()):
    """``volumes`` as items of a sequence ``name`` browsed in a proxy node, as Slicer's DICOM
    module shows a dynamic series and the Sequences module a 4D file (the proxy made by
    slicer-core's own Sequences logic): returns the proxy node, showing item ``selected``.
    ``attributes``: one dict of node attributes per item (e.g. ``DICOM.instanceUIDs``)."""
    import slicer

    from clinicalai.mrml.volumes import add_volume_node

    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(ctx.scene)
    sequence = ctx.scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for k, volume in enumerate(volumes):
        item = add_volume_node(ctx.scene, volume, f"{name} {k}", display=False)
        for key, value in (dict(attributes[k]) if attributes else {}).items():
            item.SetAttribute(key, value)
        sequence.SetDataNodeAtValue(item, str(k))
        ctx.scene.RemoveNode(item)  # the sequence keeps its own copy, as Slicer's plugins do
    browser = ctx.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetSelectedItemNumber(selected)
    logic.UpdateProxyNodesFromSequences(browser)
    return browser.GetProxyNode(sequence)
