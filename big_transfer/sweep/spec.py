"""What a sweep is: a recipe, the settings to cross, and the runs that result.

A sweep file (`configs/sweeps/NAME.py`) defines `get_sweep(arg) -> Sweep`. Every member of a
sweep is an ordinary run of

    python -m big_transfer.main --config=RECIPE:ARGS --workdir=SWEEP_DIR/NAME [--config.K=V ...]

A *setting* is a recipe argument (`dataset`, `examples_per_class`, `model`, `init`: what goes
after the recipe's `:`) or, written `config.KEY`, a key of the run config (`config.seed`,
`config.data.crop`). A member's name lists its settings, `dataset=cifar10,examples_per_class=5,
seed=1`, and is its sub-directory of the sweep's workdir.
"""

import contextlib
import dataclasses
import importlib.util
import itertools
import re
import shlex
from collections.abc import Mapping, Sequence

from absl import logging
from etils import epath

from big_transfer import command_line, errors

CONFIG_PREFIX = "config."
# Written in a string setting, it stands for the sweep's workdir (e.g. an upstream run in it).
WORKDIR_FIELD = "{workdir}"
# Characters kept in member names; others become "_" ("/" becomes "."), so a name is one
# portable path component.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_MAX_NAME_LENGTH = 200

Value = str | int | float | bool | tuple


@dataclasses.dataclass(frozen=True)
class Labelled:
  """A setting's value shown in member names and tables as `label` (a path, an empty init)."""
  label: str
  value: Value


@dataclasses.dataclass(frozen=True)
class Exclude:
  """Members whose settings include all of `when` are not run; the report gives `reason`."""
  when: Mapping[str, Value]
  reason: str


@dataclasses.dataclass(frozen=True)
class Prerequisite:
  """A run the members need first (an upstream model), in `SWEEP_DIR/name`.

  Attributes:
    name: its sub-directory; `{workdir}/NAME` names it in the members' settings.
    recipe: `configs/NAME.py[:ARG]`.
    config: run config keys (without "config.") and their values.
  """
  name: str
  recipe: str
  config: Mapping[str, Value] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep: what `get_sweep(arg)` of a sweep file returns.

  The members are every explicit member (or one empty member when there are none) crossed with
  every combination of the axes' values. Settings of `base` go to every member without naming it.

  Attributes:
    recipe: `configs/NAME.py[:ARG]`, relative to the directory the sweep runs in (as
      `--config` of big_transfer.main); the members' recipe arguments are added to ARG.
    axes: setting -> the values to cross, in order; a value may be `Labelled`.
    members: explicit members, each a mapping of settings.
    base: settings every member has, not part of names.
    exclude: members not to run, with the reason.
    seed_axis: the setting whose values repeat an experiment: results aggregate over it
      (min <- median -> max).
    prerequisites: runs done before the members, in order.
    metric: the summary.json key that tables and plots report.
  """
  recipe: str
  axes: Mapping[str, Sequence[Value]] = dataclasses.field(default_factory=dict)
  members: Sequence[Mapping[str, Value]] = ()
  base: Mapping[str, Value] = dataclasses.field(default_factory=dict)
  exclude: Sequence[Exclude] = ()
  seed_axis: str = "config.seed"
  prerequisites: Sequence[Prerequisite] = ()
  metric: str = "eval/accuracy"


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep.

  Attributes:
    name: its sub-directory of the sweep's workdir.
    settings: setting -> value (maybe `Labelled`), those that name it: the explicit member's,
      then the axes'.
    fixed: the run's other settings (the recipe's argument, the sweep's `base`) as the command
      line spells them: a data set that is no axis is found here.
    recipe: `RECIPE[:ARG]` as `--config` of big_transfer.main takes it.
    config: run config key (without "config.") -> value as the command line spells it.
    excluded: why it is not run, or None.
  """
  name: str
  settings: Mapping[str, Value]
  fixed: Mapping[str, str]
  recipe: str
  config: Mapping[str, str]
  excluded: str | None = None

  @property
  def labels(self) -> dict[str, str]:
    """setting -> how its value reads in the name and in tables."""
    return {s: setting_label(v) for s, v in self.settings.items()}

  def command(self, workdir: str, python: str = "python") -> list[str]:
    """The argv of `python -m big_transfer.main` that runs this member in `workdir/name`."""
    fill = lambda text: text.replace(WORKDIR_FIELD, str(workdir))
    return [python, "-m", "big_transfer.main", f"--config={fill(self.recipe)}",
            f"--workdir={epath.Path(workdir) / self.name}",
            *(f"--config.{k}={fill(v)}" for k, v in self.config.items())]

  def shell_line(self, workdir: str, python: str = "python") -> str:
    """`command` as one shell-quoted line."""
    return shlex.join(self.command(workdir, python))


def load(spec: str) -> Sweep:
  """The `Sweep` of "path/to/sweep.py[:ARG]": the file's `get_sweep(ARG)`."""
  path, _, arg = spec.partition(":")
  if not path.endswith(".py") or not epath.Path(path).is_file():
    raise errors.ConfigError(f"--sweep={spec}: {path!r} is not a sweep file; pass "
                             "configs/sweeps/NAME.py[:ARG] (see docs/sweeps.md).")
  command_line.check_python_file(path, "--sweep")
  module_spec = importlib.util.spec_from_file_location(f"sweep_{epath.Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  with _code_of(path):
    module_spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise errors.ConfigError(f"The sweep file {path} defines no get_sweep(arg).")
  with _code_of(path):
    sweep = module.get_sweep(arg)
  if not isinstance(sweep, Sweep):
    raise errors.ConfigError(f"get_sweep of {path} returned {type(sweep).__name__}, not a "
                             "big_transfer.sweep.Sweep.")
  return sweep


@contextlib.contextmanager
def _code_of(path: str):
  """Running a sweep file's code: its own failure is one ConfigError naming the file and the
  exception; the traceback is logged at --verbosity=1."""
  try:
    yield
  except errors.UserError:
    raise
  except Exception as e:  # The file's code is the user's: any exception is theirs to fix.
    logging.debug("The sweep file %s failed:", path, exc_info=True)
    raise errors.ConfigError(f"The sweep file {path} failed: {type(e).__name__}: {e} (rerun "
                             "with --verbosity=1 for the traceback).") from None


def setting_label(value: Value) -> str:
  """How a value reads in a member's name: `vtab/dtd` -> `vtab.dtd`, (1, 5) -> `1_5`."""
  if isinstance(value, Labelled):
    return value.label
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (tuple, list)):
    return "_".join(setting_label(v) for v in value) or "none"
  return _NAME_UNSAFE.sub("_", str(value).replace("/", ".")) or "none"


def short_name(setting: str) -> str:
  """A setting as it reads in names: "config.seed" -> "seed"."""
  return setting.removeprefix(CONFIG_PREFIX)


def command_value(value: Value) -> str:
  """A value as the command line spells it (absl and ml_collections parse it back)."""
  if isinstance(value, Labelled):
    return command_value(value.value)
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def raw_value(value: Value) -> Value:
  return value.value if isinstance(value, Labelled) else value


def expand(sweep: Sweep, overrides: Mapping[str, Value] | None = None) -> list[Member]:
  """The members of `sweep`, in order: explicit members, each crossed with the axes.

  Args:
    sweep: the sweep.
    overrides: settings for every member that do not name it (`--set`), after `sweep.base`.
  Raises a ConfigError for settings that cannot make distinct, runnable members.
  """
  overrides = dict(overrides or {})
  explicit = list(sweep.members) or [{}]
  for name, values in sweep.axes.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
      raise errors.ConfigError(f"Axis {name!r} must be a non-empty list of values, got "
                               f"{values!r}.")
  members, seen = [], {}
  for member, combination in itertools.product(explicit,
                                               itertools.product(*sweep.axes.values())):
    settings = {**member, **dict(zip(sweep.axes, combination))}
    overlap = set(member) & set(sweep.axes)
    if overlap:
      raise errors.ConfigError(f"Settings {sorted(overlap)} are both in an explicit member and "
                               "an axis; give each setting one place.")
    if set(settings) & set(overrides):
      raise errors.ConfigError(f"--set {sorted(set(settings) & set(overrides))}: the sweep "
                               "varies these settings between members; --set only settings "
                               "every member shares.")
    made = _member(sweep, {**sweep.base, **overrides}, settings)
    if made.name in seen:
      raise errors.ConfigError(
          f"Two members are both named {made.name!r} ({seen[made.name]} and {dict(settings)}); "
          "give their values distinct labels with big_transfer.sweep.Labelled.")
    seen[made.name] = dict(settings)
    members.append(made)
  return members


def prerequisite_runs(sweep: Sweep, overrides: Mapping[str, Value] | None = None
                      ) -> list[Member]:
  """The prerequisites as members without settings (named by their `name`); of `overrides`
  (`--set`), the `config.` settings apply to them too, recipe arguments (the members') not."""
  shared = {short_name(s): command_value(v) for s, v in (overrides or {}).items()
            if s.startswith(CONFIG_PREFIX)}
  return [Member(name=p.name, settings={}, fixed={}, recipe=p.recipe,
                 config={**{k: command_value(v) for k, v in p.config.items()}, **shared})
          for p in sweep.prerequisites]


def _member(sweep: Sweep, base: Mapping[str, Value], settings: Mapping[str, Value]) -> Member:
  recipe, _, base_arg = sweep.recipe.partition(":")
  recipe_args, config, fixed = {}, {}, {}
  for setting, value in {**base, **settings}.items():
    text = command_value(value)
    if setting not in settings:
      fixed[setting] = text
    if setting.startswith(CONFIG_PREFIX):
      config[short_name(setting)] = text
    elif "," in text:
      raise errors.ConfigError(f"The recipe argument {setting}={text!r} holds a ',', which "
                               "separates recipe arguments; pass it as a config. setting.")
    else:
      recipe_args[setting] = text
  short = [short_name(s) for s in settings]
  if len(set(short)) != len(short):
    raise errors.ConfigError(f"Settings {list(settings)} read alike in member names; use "
                             "either the recipe argument or the config. key.")
  name = ",".join(f"{short_name(s)}={setting_label(v)}" for s, v in settings.items())
  name = name or "default"
  if len(name) > _MAX_NAME_LENGTH:
    raise errors.ConfigError(f"Member name {name[:80]}... is over {_MAX_NAME_LENGTH} "
                             "characters; give long values short labels with "
                             "big_transfer.sweep.Labelled.")
  if recipe_args:
    base_args = _parse_recipe_arg(base_arg, sweep.recipe)
    fixed = {**{k: v for k, v in base_args.items() if k not in settings}, **fixed}
    recipe += ":" + ",".join(f"{k}={v}" for k, v in {**base_args, **recipe_args}.items())
  elif base_arg:
    recipe += ":" + base_arg
  raw = {s: raw_value(v) for s, v in settings.items()}
  excluded = next((e.reason for e in sweep.exclude
                   if all(s in raw and raw[s] == raw_value(v) for s, v in e.when.items())), None)
  return Member(name=name, settings=dict(settings), fixed=fixed, recipe=recipe, config=config,
                excluded=excluded)


def _parse_recipe_arg(arg: str, where: str) -> dict[str, str]:
  """"k=v,k=v" -> {k: v}; the recipe itself checks keys and types. Members that set recipe
  arguments need a base argument of this form."""
  args = {}
  for item in filter(None, (part.strip() for part in arg.split(","))):
    key, sep, value = item.partition("=")
    if not sep:
      raise errors.ConfigError(f"Recipe argument {item!r} of {where!r} is not key=value.")
    args[key] = value
  return args
