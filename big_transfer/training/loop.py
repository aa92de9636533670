"""The training loop: config -> experiment -> sharded state -> jitted steps -> metrics, checkpoints.

`train_and_evaluate(config, workdir)` runs BiT pre-training or fine-tuning on whatever devices
JAX sees. Rerunning it on the same workdir resumes from the latest complete checkpoint.
"""

import dataclasses
import functools
import logging
import signal
import time

import jax
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions
from etils import epath

from big_transfer import atomic, data, errors, sharding
from big_transfer.data import eval_sets
from big_transfer.launch import workdir_hold
from big_transfer.models import interop
from big_transfer.training import checkpoints, evaluation, evaluators, experiment, step_window

# In the workdir when a run ends: status, step, metrics and the config (what a sweep reads).
SUMMARY_FILE = "summary.json"
# What a Ctrl-C says before the loop's own handler runs (data preparation, restoring, state
# creation): nothing of the workdir has changed yet.
_INTERRUPTED_IN_SETUP = ("Interrupted (Ctrl-C) while setting up the run, before it trained: the "
                         "workdir's checkpoints are as they were; rerun the same command to start "
                         "or resume.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`_train_and_evaluate` while this job holds `workdir` (big_transfer.launch.workdir_hold): a second
  job on the same workdir stops at once instead of mixing its checkpoints with this one's."""
  atomic.check_scheme(workdir, "--workdir")
  with workdir_hold.hold(workdir, config.hold_stale_after_s):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`, evaluates, and writes `workdir/summary.json`.

  Everything that can be checked is checked before the first step: the config, the mesh, the
  training data, the eval split, the few-shot data sets and the pretrained weights.

  Returns:
    The summary: status ("completed" or "preempted"), step, the last training metrics and the
    final evaluation.
  """
  started = time.time()
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with errors.on_interrupt(_INTERRUPTED_IN_SETUP):
    exp = experiment.build(config)
    fewshot_cfgs = _open_evaluation_data(exp)
    ready_evals = _ready_evaluators(config, exp.model.num_classes)
  logging.info("Topology: %s", sharding.describe(exp.mesh, config.batch_size,
                                                  config.grad_accum_steps))
  logging.info("Schedule: %s", exp.schedule.describe(config.batch_size,
                                                     exp.dataset_info.num_train_examples))
  if config.recipe_notes:
    logging.info("Recipe decisions (config.recipe_notes):\n%s", "\n".join(
        f"  {key}: {value}" for key, value in config.recipe_notes.to_dict().items()))
  ckpts = checkpoints.Checkpoints(workdir, config.checkpoint_every_steps,
                                  config.keep_checkpoints, config.keep_checkpoint_every or None)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  try:
    with errors.on_interrupt(_INTERRUPTED_IN_SETUP):
      state, start = _initial_or_restored_state(config, exp, ckpts)
      frozen = exp.frozen_inputs()
      teacher_predictions = (evaluation.TeacherPredictions(exp.steps.teacher_eval, *frozen)
                             if exp.teacher else None)
      evaluate = functools.partial(_evaluate, config, exp, fewshot_cfgs, ready_evals,
                                   teacher=teacher_predictions)
      writer.write_hparams({k: v for k, v in config.to_dict().items()
                            if not isinstance(v, dict)})
    state, status, train_metrics, first_step_done = _loop(config, exp, evaluate, state, frozen,
                                                          start, ckpts, writer)
    summary = {"status": status, "step": int(state.step), "train": train_metrics,
               # Setup, compilation and one step: what a compilation cache shortens.
               "seconds_to_first_step": None if first_step_done is None else
                                        first_step_done - started}
    if status == "completed":
      # The checkpoint of the last step is saved (the `finally` below waits for it); without a
      # summary, a rerun restores it and only evaluates.
      with errors.on_interrupt(f"Interrupted (Ctrl-C) during the final evaluation: training is "
                               f"done and its checkpoint at step {summary['step']} is kept (no "
                               f"{SUMMARY_FILE} is written); rerun the same command to evaluate "
                               "it without training again."):
        results = evaluate(state.params)
      writer.write_scalars(summary["step"], results)
      summary.update(results)
      if teacher_predictions is not None:  # A constant of the run, written to the metrics once.
        summary["eval/teacher_accuracy"] = teacher_predictions.accuracy
  finally:
    ckpts.wait()  # A save in flight completes even when the loop failed.
    ckpts.close()
    writer.close()
  summary["config"] = config.to_dict()
  if jax.process_index() == 0:
    atomic.write_json(workdir / SUMMARY_FILE, summary)
  return summary


def _open_evaluation_data(exp: experiment.Experiment) -> dict[str, data.InputConfig]:
  """Opens the eval split and the few-shot data sets, so a missing one fails before training.

  Returns the input config of each few-shot data set: the run's eval recipe on its splits.
  """
  data.split_size(exp.input_cfg, exp.input_cfg.eval_split)
  fewshot_cfgs = {
      name: dataclasses.replace(exp.input_cfg, dataset=name, train_split=train_split,
                                eval_split=test_split, examples_per_class=None, multilabel=False,
                                mixup_alpha=0.0)
      for name, (train_split, test_split) in exp.config.fewshot.datasets.items()}
  if exp.config.fewshot.shots:
    for cfg in fewshot_cfgs.values():
      data.split_size(cfg, cfg.train_split)
      data.split_size(cfg, cfg.eval_split)
  return fewshot_cfgs


def _ready_evaluators(config, num_classes: int) -> list[eval_sets.EvalSet]:
  """The evaluation sets of `config.evals` whose data is ready; the others are named, with what
  prepares them, in one warning, and skipped: a missing robustness set never stops a run."""
  ready, missing = [], []
  if config.evals:
    evaluators.check_head(num_classes, config.evals_label_map)
  for eval_set in evaluators.check(config.evals, config.evals_label_map):
    try:
      data.check_eval_set(eval_set, config.data.data_dir)
      ready.append(eval_set)
    except errors.DataError as e:
      missing.append(f"{eval_set.name}: {e}")
  if missing:
    logging.warning("Skipping %d of the %d evaluators of config.evals, whose data is not ready:"
                    "\n  %s", len(missing), len(config.evals), "\n  ".join(missing))
  return ready


def _initial_or_restored_state(config, exp: experiment.Experiment,
                               ckpts: checkpoints.Checkpoints):
  """(state, step): the workdir's latest checkpoint, or a fresh state (with `config.init`)."""
  restored = ckpts.restore(checkpoints.abstract_like(exp.abstract_state, exp.state_shardings),
                           expected=exp.record)
  if restored is not None:
    state, _, step = restored
    logging.info("Resuming from the checkpoint at step %d.", step)
    return state, step
  state = exp.steps.create(jax.random.key(config.seed))
  if not config.init:
    return state, 0
  pretrained = checkpoints.load_params(config.init)
  params, report = interop.merge_pretrained(jax.device_get(state.params), pretrained,
                                            keep_head=config.init_keep_head,
                                            allow_partial=config.init_partial)
  logging.info("Initialized from %s:\n%s", config.init, report.summary())
  params = jax.device_put(params, exp.state_shardings.params)
  opt_state = jax.jit(exp.optimizer.init, out_shardings=exp.state_shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state), 0


class _PreemptionWatch:
  """Tells when to save and stop: the job is being preempted (SIGTERM) or the user pressed
  Ctrl-C (SIGINT).

  On many processes JAX's preemption service catches SIGTERM and makes all hosts agree on the
  step (through orbax); a single process has no such service, so signal handlers set a flag
  while the loop runs. A second Ctrl-C interrupts at once (KeyboardInterrupt), for a save that
  hangs. Used as a context manager, it puts the previous handlers back on exit.
  """

  def __init__(self, ckpts: checkpoints.Checkpoints):
    self._ckpts = ckpts
    self.signal: signal.Signals | None = None  # The one that asked to stop, if any.
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1:
      self._previous = {s: signal.signal(s, self._on_signal)
                        for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _on_signal(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum)
    if self.signal == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def reached(self, step: int) -> bool:
    return self.signal is not None or self._ckpts.reached_preemption(step)

  def describe(self) -> str:
    """How the stop was asked for, for the line that says how to resume."""
    return "Interrupted (Ctrl-C)" if self.signal == signal.SIGINT else "Preempted"


def _check_finite(state) -> None:
  bad = int(state.first_bad_step)
  if bad >= 0:
    raise errors.NonFiniteLossError(f"The loss, gradients or parameters became NaN or infinite "
                                    f"at step {bad}; "
                                    "stopping without saving the bad state (the latest "
                                    "checkpoint holds the last good weights). Lower the "
                                    "learning rate or set --config.grad_clip_norm.")


def _evaluate(config, exp: experiment.Experiment, fewshot_cfgs, ready_evals, params, *,
              teacher: evaluation.TeacherPredictions | None) -> dict:
  """One evaluation of `params`: top-1 (and against the teachers), few-shot, `config.evals`."""
  eval_cfg = dataclasses.replace(exp.input_cfg, mixup_alpha=0.0)
  top1 = evaluation.top1(params, exp.steps, eval_cfg, config.eval_batch_size, exp.batch_sharding,
                         teacher)
  results = {f"eval/{key}": value for key, value in top1.items()}
  if fewshot_cfgs and config.fewshot.shots:
    probes = evaluation.fewshot_probes(params, exp.steps, fewshot_cfgs, tuple(config.fewshot.shots),
                                     config.fewshot.seeds, config.fewshot.l2_reg,
                                     config.eval_batch_size, exp.batch_sharding)
    results.update({f"fewshot/{key}": value for key, value in probes.items()})
  for eval_set in ready_evals:
    scores = evaluators.evaluate(
        eval_set, params, exp.steps.logits, data_dir=config.data.data_dir,
        recipe=exp.input_cfg.recipe, crop=exp.input_cfg.crop, batch_size=config.eval_batch_size,
        batch_sharding=exp.batch_sharding, label_map=config.evals_label_map)
    results.update({f"evals/{eval_set.name}/{key}": value for key, value in scores.items()})
  return results


def _loop(config, exp: experiment.Experiment, evaluate, state, frozen: tuple, start: int,
          ckpts: checkpoints.Checkpoints, writer) -> tuple[object, str, dict, float | None]:
  """Steps from `start` to `config.total_steps` or a preemption; `frozen` are the train step's
  unchanging inputs (`Experiment.frozen_inputs`), `evaluate`: params -> the metrics of one
  evaluation.

  Returns:
    (state, status "completed" or "preempted", the last logged training means, when (time.time())
    the first step of this attempt had run, or None if it ran no step).
  """
  progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer,
                                             every_steps=config.log_every_steps)
  with errors.on_interrupt(_INTERRUPTED_IN_SETUP):
    batches = data.prefetch_to_mesh(
        data.train_batches(exp.input_cfg, config.batch_size, config.seed, start_step=start),
        exp.batch_sharding)
  pending, last_log, train_metrics, first_step_done = [], time.time(), {}, None
  in_flight = step_window.StepWindow()  # XLA:CPU's fake devices deadlock when dispatch runs far ahead.
  step = start
  try:
    # The first Ctrl-C is the watch's (save and stop); a second one interrupts whatever runs.
    with errors.on_interrupt("Interrupted (Ctrl-C) a second time while training: stopped; the "
                             "workdir's complete checkpoints are kept; rerun the same command to "
                             "resume from the latest."), _PreemptionWatch(ckpts) as preemption:
      while step < config.total_steps:
        state, metrics = exp.steps.train(state, next(batches), *frozen)
        in_flight.add(metrics)
        pending.append(metrics)
        if first_step_done is None:
          jax.block_until_ready(metrics)  # Run, not only dispatched.
          first_step_done = time.time()
        step += 1
        progress(step)
        if step % config.log_every_steps == 0 or step == config.total_steps:
          _check_finite(state)
          now = time.time()
          train_metrics = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
          train_metrics["learning_rate"] = float(pending[-1]["learning_rate"])
          train_metrics["images_per_sec"] = len(pending) * config.batch_size / (now - last_log)
          writer.write_scalars(step, {f"train/{k}": v for k, v in train_metrics.items()})
          pending, last_log = [], now
        if preemption.reached(step):
          _check_finite(state)
          ckpts.save(step, state, exp.record, force=True)
          ckpts.wait()
          logging.warning("%s: saved the checkpoint at step %d; rerun the same command to "
                          "resume.", preemption.describe(), step)
          return state, "preempted", train_metrics, first_step_done
        if step % config.checkpoint_every_steps == 0 or step == config.total_steps:
          _check_finite(state)
          ckpts.save(step, state, exp.record, force=step == config.total_steps)
        if (config.eval_every_steps and step % config.eval_every_steps == 0
            and step < config.total_steps):
          writer.write_scalars(step, evaluate(state.params))
  finally:
    batches.close()  # Stops the prefetch thread before evaluation or interpreter exit.
  return state, "completed", train_metrics, first_step_done
