"""Cohort runs on Dask: ``clinicalai batch {segment,correct,pet,explain,anomaly} INPUTS --out DIR``.

- :mod:`.inputs`: the cases of a folder or a CSV, with stable unique names;
- :mod:`.workflows`: what each single-case command needs and writes per case;
- :mod:`.worker`: one case on a Dask worker (model cache, atomic case folder, one-line errors);
- :mod:`.run`: the driver (local or remote cluster, skip / force, progress, summary);
- :mod:`.commands`: the ``batch`` subcommands.
"""

from .inputs import Case, discover_cases
from .run import BatchOptions, run_batch

__all__ = ["BatchOptions", "Case", "discover_cases", "run_batch"]
