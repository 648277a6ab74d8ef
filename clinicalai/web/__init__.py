"""ClinicalAI in the browser: the three panels on trame-slicer (``clinicalai web``).

Importing this package does not import trame or Slicer; :mod:`clinicalai.web.app` does.
"""
