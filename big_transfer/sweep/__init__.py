"""Fine-tuning sweeps: many runs of one recipe over data sets x shots x seeds x models.

A sweep file (`configs/sweeps/NAME.py`) returns a `Sweep` from `get_sweep(arg)`;
`python -m big_transfer.sweep` runs its members, or prints their commands for a scheduler, and
writes the results. See docs/sweeps.md.
"""

from big_transfer.sweep.spec import WORKDIR_FIELD as WORKDIR
from big_transfer.sweep.spec import Exclude, Labelled, Prerequisite, Sweep

__all__ = ["Exclude", "Labelled", "Prerequisite", "Sweep", "WORKDIR"]
