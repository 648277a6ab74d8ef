"""PetRecurrence engine: 18F-FDOPA brain PET -> P(recurrence) vs treatment-related change.

- :mod:`.suv`: SUV body weight from the PET tags;
- :mod:`.preprocess`: SUV -> 2 mm -> brain mask -> centred 128x128x82 -> [0, 1], invertible;
- :mod:`.static`: SUVmax, TBRmax, TBRmean;
- :mod:`.train`: k-fold training / evaluation of the study's 3D CNNs;
- :mod:`.workflow`: :func:`predict_pet` (fold ensemble, Grad-CAM on the PET grid).
"""
