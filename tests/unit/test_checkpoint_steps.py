"""Asking for a checkpoint step that is not there: one message, from one owner."""

import re

import pytest

from big_transfer import errors
from big_transfer.training import checkpoints


def test_a_missing_step_names_the_available_steps_or_none(tmp_path):
  ckpts = checkpoints.Checkpoints(tmp_path, every_steps=1)
  message = (f"No checkpoint at step 3 in {tmp_path / checkpoints.SUBDIR}; available steps: "
             "none.")
  with pytest.raises(errors.CheckpointError, match=re.escape(message)):
    ckpts.check_step(3)
  with pytest.raises(errors.CheckpointError, match=re.escape(message)):
    ckpts.restore(abstract_state=None, step=3)
  ckpts.close()
