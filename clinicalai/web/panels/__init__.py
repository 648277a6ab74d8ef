"""The drawer panels of the browser app; each is a thin view over :mod:`clinicalai.mrml`."""
