"""A damaged latest checkpoint: the one before it is restored, and the reads abandoned with the
damaged one report nothing, however late they finish. (Through the program, with its one warning
line: tests/e2e/test_bad_input.py.)"""

import asyncio
import gc
import logging
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from big_transfer.recipes import schema
from big_transfer.training import checkpoints, run_record


def test_the_reads_abandoned_with_a_damaged_checkpoint_report_nothing(tmp_path, monkeypatch,
                                                                       caplog):
  reports = []
  monkeypatch.setattr(sys, "unraisablehook", reports.append)
  # Many arrays of 1 MiB: orbax reads them concurrently, so most are still in flight when the
  # first damaged one fails and orbax closes the restore's event loop.
  # Random, so that they do not compress to nothing.
  noise = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)
  state = {f"w{i:03d}": jnp.asarray(noise + i) for i in range(160)}
  record = run_record.RunRecord.of_run(schema.base(), 10, None, "float32")
  ckpts = checkpoints.Checkpoints(tmp_path, every_steps=1)
  for step in (1, 2):
    ckpts.save(step, jax.tree.map(lambda x, s=step: x + s, state), record, force=True)
    ckpts.wait()
  # One data file only: the reads of the others are in flight when its read fails.
  damaged = max((tmp_path / "checkpoints" / "2" / "state").rglob("ocdbt.process_0/d/*"),
                key=lambda f: f.stat().st_size)
  damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), state)

  caplog.clear()  # orbax's own lines of the saves.
  with caplog.at_level(logging.WARNING):
    restored, _, step = ckpts.restore(abstract)
    time.sleep(1)  # Not a timing check: lets the abandoned reads finish on tensorstore's threads.
    gc.collect()
  ckpts.close()

  # What tensorstore's thread reports when an abandoned read finishes after orbax closed the
  # restore's event loop (a race: the restore above shows it only now and then): asyncio's
  # call_soon_threadsafe on a closed loop, with no Python frame above it.
  closed = asyncio.new_event_loop()
  closed.close()
  try:
    closed.call_soon_threadsafe(print)
  except RuntimeError as e:
    late = e
  sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=late,
                                           exc_traceback=late.__traceback__.tb_next,
                                           err_msg=None, object=None))
  sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=late,
                                           exc_traceback=late.__traceback__, err_msg=None,
                                           object=None))  # Raised in our code: kept.

  assert step == 1
  np.testing.assert_array_equal(restored["w007"], noise + 7 + 1)
  assert [(str(r.exc_value), r.exc_traceback.tb_frame.f_code.co_name) for r in reports] == [
      ("Event loop is closed", "test_the_reads_abandoned_with_a_damaged_checkpoint_report_nothing")]
  said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(said) == 1, said  # Not asyncio's "Task exception was never retrieved" either.
  assert said[0].startswith(f"Checkpoint {tmp_path / 'checkpoints' / '2'} is damaged or "
                            "incomplete (")
