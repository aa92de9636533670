"""Running a sweep's members on this machine: skip the finished, resume the interrupted.

Each member is its own `python -m big_transfer.main` process (so one member's failure, memory or
devices never touch another), its output appended to `SWEEP_DIR/NAME/sweep.log` and the end of
each attempt (exit code, error line, wall time) written to `SWEEP_DIR/NAME/sweep_outcome.json`.
Members share JAX's persistent compilation cache, so only the first one of each program compiles.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from etils import epath

from big_transfer import atomic, command_line, errors
from big_transfer.sweep import spec
from big_transfer.training import checkpoints, loop

SUMMARY = loop.SUMMARY_FILE
OUTCOME = "sweep_outcome.json"
LOG = "sweep.log"
# The members, their settings and commands: what `--report` rebuilds the results from.
MANIFEST = "sweep.json"
CACHE_DIR = ".jax_cache"


@dataclasses.dataclass(frozen=True)
class Plan:
  """What running the sweep does to a member: "skip", "resume", "run" or "exclude", and why."""
  action: str
  detail: str = ""


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a member's latest attempt ended (sweep_outcome.json).

  Attributes:
    exit_code: the process's exit code (negative: killed by that signal).
    error: its `error: ...` line, or the last line of its traceback; None when it succeeded.
    started_at: time.time() at its start.
    wall_s: seconds it ran.
  """
  exit_code: int
  error: str | None
  started_at: float
  wall_s: float


def read_json(path: epath.Path) -> dict | None:
  """A JSON file the sweep or a run wrote (atomically), or None if there is none."""
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.DataError(f"{path} is not valid JSON ({e}); move it aside and rerun.") from None


def read_outcome(run_dir: epath.Path) -> Outcome | None:
  saved = read_json(run_dir / OUTCOME)
  return Outcome(**saved) if saved else None


def plan(member: spec.Member, workdir) -> Plan:
  """Whether running the sweep now skips, resumes or runs `member`."""
  if member.excluded:
    return Plan("exclude", member.excluded)
  run_dir = epath.Path(workdir) / member.name
  summary = read_json(run_dir / SUMMARY)
  if summary and summary.get("status") == "completed":
    return Plan("skip", f"completed at step {summary['step']}")
  steps = checkpoints.saved_steps(run_dir)
  if steps:
    return Plan("resume", f"from the checkpoint at step {steps[-1]}")
  return Plan("run")


def member_env(workdir) -> dict[str, str]:
  """This process's environment with the sweep's shared compilation cache, unless one is set."""
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(epath.Path(workdir) / CACHE_DIR))
  # Cache every program, even those that compile fast: each member runs the same ones.
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def error_line(exit_code: int, output: str) -> str | None:
  """The line that says why a member failed: main's `error: ...` line, else the last line of
  its output (a traceback's exception); None for a success."""
  if exit_code == 0:
    return None
  if exit_code == command_line.PREEMPTED:
    return "stopped by SIGTERM after saving a checkpoint; rerun the sweep to resume"
  lines = [line.strip() for line in output.splitlines() if line.strip()]
  errors_said = [line for line in lines if line.startswith("error: ")]
  if errors_said:
    return errors_said[-1]
  if exit_code < 0:
    return f"killed by {signal.Signals(-exit_code).name}"
  return lines[-1] if lines else f"exit code {exit_code} without output"


class _Children:
  """The member processes running now; a stop sends each SIGTERM and starts no new one.

  Members run in their own session, so a Ctrl-C at the terminal reaches the sweep alone, which
  turns it into the SIGTERM that makes a run save a checkpoint before it exits.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._running: set[subprocess.Popen] = set()
    self.stopped = False

  def start(self, command: list[str], **kwargs) -> subprocess.Popen | None:
    with self._lock:
      if self.stopped:
        return None
      process = subprocess.Popen(command, start_new_session=True, **kwargs)
      self._running.add(process)
      return process

  def done(self, process: subprocess.Popen) -> None:
    with self._lock:
      self._running.discard(process)

  def stop(self, signum, frame) -> None:
    del frame
    with self._lock:
      if not self.stopped:
        print(f"Stopping the sweep ({signal.Signals(signum).name}): running members save a "
              "checkpoint and stop; rerun the same command to resume.", flush=True)
      self.stopped = True
      for process in self._running:
        process.send_signal(signal.SIGTERM)


@contextlib.contextmanager
def _log_file(run_dir: epath.Path):
  """A local file for the member's output: `run_dir/sweep.log` itself on a local file system;
  elsewhere (gs://) a temporary file appended to it when the attempt ends."""
  log = run_dir / LOG
  if "://" not in str(run_dir):
    with open(log, "a", encoding="utf-8") as f:
      yield f
    return
  with tempfile.NamedTemporaryFile("w+", encoding="utf-8", suffix=".log") as f:
    yield f
    f.flush()
    f.seek(0)
    atomic.write_text(log, (log.read_text() if log.exists() else "") + f.read())


def run_member(member: spec.Member, workdir, command: list[str], env: Mapping[str, str],
               children: _Children) -> Outcome | None:
  """Runs one member to its end; returns its outcome, or None if the sweep was stopped first."""
  run_dir = epath.Path(workdir) / member.name
  run_dir.mkdir(parents=True, exist_ok=True)
  started = time.time()
  with _log_file(run_dir) as log:
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sweep runs: {shlex.join(command)}\n")
    log.flush()
    start_of_attempt = os.path.getsize(log.name)
    process = children.start(command, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env=dict(env))
    if process is None:
      return None
    try:
      exit_code = process.wait()
    finally:
      children.done(process)
    with open(log.name, "rb") as written:
      written.seek(start_of_attempt)
      output = written.read().decode("utf-8", errors="replace")
  outcome = Outcome(exit_code=exit_code, error=error_line(exit_code, output),
                    started_at=started, wall_s=time.time() - started)
  atomic.write_json(run_dir / OUTCOME, dataclasses.asdict(outcome))
  return outcome


def run(members: Sequence[spec.Member], prerequisites: Sequence[spec.Member], workdir,
        command_of: Callable[[spec.Member], list[str]], parallel: int = 1) -> int:
  """Runs the prerequisites (in order), then the members (`parallel` at a time).

  Finished members are skipped; a failing one is reported and the others go on. SIGTERM or
  Ctrl-C stops the running members with a checkpoint saved.

  Returns:
    0 when every member completed or was skipped; command_line.PREEMPTED when the sweep was
    stopped; 1 when any member failed.
  """
  env = member_env(workdir)
  children = _Children()
  previous = {s: signal.signal(s, children.stop) for s in (signal.SIGTERM, signal.SIGINT)}
  failed = []
  try:
    for group, workers in ((prerequisites, 1), (members, parallel)):
      todo = [(m, plan(m, workdir)) for m in group]
      with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_reporting, m, p, workdir, command_of(m), env, children,
                               f"[{i}/{len(todo)}]"): m
                   for i, (m, p) in enumerate(todo, 1)}
        for future in concurrent.futures.as_completed(futures):
          if not future.result():
            failed.append(futures[future].name)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if children.stopped:
    return command_line.PREEMPTED
  if failed:
    print(f"{len(failed)} member(s) failed: {', '.join(sorted(failed))}.", flush=True)
    return 1
  return 0


def _run_reporting(member: spec.Member, member_plan: Plan, workdir, command: list[str],
                   env: Mapping[str, str], children: _Children, counter: str) -> bool:
  """Runs a member unless its plan skips it, with a line at its start and end; True if it
  completed, was skipped or was not started because the sweep stopped."""
  if children.stopped:
    return True
  if member_plan.action in ("skip", "exclude"):
    print(f"{counter} {member.name}: {member_plan.action} ({member_plan.detail})", flush=True)
    return True
  print(f"{counter} {member.name}: {member_plan.action} {member_plan.detail}".rstrip(),
        flush=True)
  outcome = run_member(member, workdir, command, env, children)
  if outcome is None:
    return True
  if outcome.exit_code == 0:
    print(f"{counter} {member.name}: completed in {outcome.wall_s:.0f} s", flush=True)
    return True
  print(f"{counter} {member.name}: failed (exit code {outcome.exit_code}) after "
        f"{outcome.wall_s:.0f} s: {outcome.error}", flush=True)
  return outcome.exit_code == command_line.PREEMPTED and children.stopped


def write_manifest(workdir, sweep_name: str, sweep: spec.Sweep, members: Sequence[spec.Member],
                   prerequisites: Sequence[spec.Member],
                   command_of: Callable[[spec.Member], list[str]]) -> None:
  """`SWEEP_DIR/sweep.json`: every member (selected or not) with its settings and command."""
  def entry(member: spec.Member) -> dict:
    # A list keeps the settings' order (the JSON is written with sorted keys).
    settings = [[s, spec.raw_value(v), v.label if isinstance(v, spec.Labelled) else None]
                for s, v in member.settings.items()]
    return {"name": member.name, "settings": settings, "fixed": dict(member.fixed),
            "excluded": member.excluded, "command": command_of(member)}
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  atomic.write_json(epath.Path(workdir) / MANIFEST, {
      "sweep": sweep_name, "recipe": sweep.recipe, "seed_axis": sweep.seed_axis,
      "metric": sweep.metric, "members": [entry(m) for m in members],
      "prerequisites": [entry(m) for m in prerequisites]})


def read_manifest(workdir) -> dict:
  manifest = read_json(epath.Path(workdir) / MANIFEST)
  if manifest is None:
    raise errors.ConfigError(f"{epath.Path(workdir) / MANIFEST} does not exist: no sweep ran "
                             "here. Pass the sweep's own --workdir, or --sweep=FILE.py[:ARG] "
                             "with --report to record its members first.")
  return manifest
