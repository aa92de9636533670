"""Sweep definitions: members from crossed axes and explicit members, names, commands, and the
sweeps in configs/sweeps/ (no training here; tests/test_sweep_run.py runs sweeps)."""

import ast
import shlex
import subprocess
import sys

import pytest

import cli
from big_transfer import errors, sweep
from big_transfer.data import vtab
from big_transfer.sweep import spec

SWEEPS = cli.REPO / "configs" / "sweeps"


def _names(members):
  return [m.name for m in members]


def _flag(command, prefix):
  [value] = [arg.removeprefix(prefix) for arg in command if arg.startswith(prefix)]
  return value


def test_axes_cross_in_order_and_name_each_member_by_its_settings():
  members = spec.expand(sweep.Sweep(
      recipe="configs/hyperrule.py:model=BiT-S-R14x1",
      axes={"dataset": ("cifar10", "vtab/dtd"), "examples_per_class": (1, 5),
            "config.seed": (0, 1)}))
  assert len(members) == 8
  assert _names(members)[:3] == ["dataset=cifar10,examples_per_class=1,seed=0",
                                 "dataset=cifar10,examples_per_class=1,seed=1",
                                 "dataset=cifar10,examples_per_class=5,seed=0"]
  # "/" would make a sub-directory: it reads as "." in names.
  assert _names(members)[-1] == "dataset=vtab.dtd,examples_per_class=5,seed=1"
  command = members[-1].command("/runs/sweep")
  assert command[:3] == ["python", "-m", "big_transfer.main"]
  assert _flag(command, "--config=") == (
      "configs/hyperrule.py:model=BiT-S-R14x1,dataset=vtab/dtd,examples_per_class=5")
  assert _flag(command, "--workdir=") == "/runs/sweep/dataset=vtab.dtd,examples_per_class=5,seed=1"
  assert _flag(command, "--config.seed=") == "1"


def test_explicit_members_cross_the_axes_and_base_settings_name_no_member():
  members = spec.expand(sweep.Sweep(
      recipe="configs/hyperrule.py:dataset=cifar10",
      members=({"model": "BiT-M-R50x1", "init": "BiT-M-R50x1.npz"},
               {"model": "BiT-S-R14x1", "init": sweep.Labelled("mine", f"{sweep.WORKDIR}/up")}),
      axes={"config.seed": (0, 1)},
      base={"config.batch_size": 128, "config.fewshot.shots": ()}))
  assert _names(members) == ["model=BiT-M-R50x1,init=BiT-M-R50x1.npz,seed=0",
                             "model=BiT-M-R50x1,init=BiT-M-R50x1.npz,seed=1",
                             "model=BiT-S-R14x1,init=mine,seed=0",
                             "model=BiT-S-R14x1,init=mine,seed=1"]
  command = members[3].command("/runs/s", python="/venv/bin/python")
  assert command[0] == "/venv/bin/python"
  # {workdir} stands for the sweep's directory.
  assert _flag(command, "--config=") == (
      "configs/hyperrule.py:dataset=cifar10,model=BiT-S-R14x1,init=/runs/s/up")
  assert _flag(command, "--config.batch_size=") == "128"
  assert _flag(command, "--config.fewshot.shots=") == "()"
  assert members[3].fixed == {"dataset": "cifar10", "config.batch_size": "128",
                              "config.fewshot.shots": "()"}


def test_values_are_spelt_as_the_command_line_parses_them():
  [member] = spec.expand(sweep.Sweep(recipe="configs/demo.py", base={
      "config.fewshot.shots": (1, 5), "config.init_keep_head": True, "config.lr": 0.5}))
  command = member.command("/w")
  assert _flag(command, "--config.fewshot.shots=") == "(1, 5)"
  assert _flag(command, "--config.init_keep_head=") == "true"
  assert _flag(command, "--config.lr=") == "0.5"
  assert member.name == "default" and _flag(command, "--config=") == "configs/demo.py"


def test_a_printed_line_is_shell_quoted_and_splits_back_into_the_command():
  [member] = spec.expand(sweep.Sweep(recipe="configs/demo.py",
                                     axes={"config.fewshot.shots": ((1, 5),)}))
  line = member.shell_line("/runs/my sweep")
  assert "'--config.fewshot.shots=(1, 5)'" in line
  assert shlex.split(line) == member.command("/runs/my sweep")


def test_excluded_members_carry_their_reason():
  members = spec.expand(sweep.Sweep(
      recipe="configs/hyperrule.py", axes={"dataset": ("cifar10", "oxford_flowers102"),
                                           "examples_per_class": (10, 25)},
      exclude=(sweep.Exclude({"dataset": "oxford_flowers102", "examples_per_class": 25},
                             "too few"),)))
  assert [m.excluded for m in members] == [None, None, None, "too few"]


def test_overrides_reach_every_member_and_their_config_settings_the_prerequisites():
  definition = sweep.Sweep(recipe="configs/hyperrule.py:model=BiT-S-R14x1",
                           axes={"config.seed": (0, 1)},
                           prerequisites=(sweep.Prerequisite("upstream", "configs/demo.py:smoke"),))
  overrides = {"data_dir": "/tfds", "config.data.data_dir": "/tfds"}
  members = spec.expand(definition, overrides)
  assert _names(members) == ["seed=0", "seed=1"]
  assert _flag(members[0].command("/w"), "--config=") == (
      "configs/hyperrule.py:model=BiT-S-R14x1,data_dir=/tfds")
  [upstream] = spec.prerequisite_runs(definition, overrides)
  assert upstream.command("/w") == ["python", "-m", "big_transfer.main",
                                    "--config=configs/demo.py:smoke", "--workdir=/w/upstream",
                                    "--config.data.data_dir=/tfds"]


@pytest.mark.parametrize("definition, overrides, message", [
    (sweep.Sweep(recipe="r.py", axes={"dataset": ("a/b", "a.b")}), {},
     "Two members are both named 'dataset=a.b'"),
    (sweep.Sweep(recipe="r.py", axes={"init": ("x,y",)}), {}, "holds a ','"),
    (sweep.Sweep(recipe="r.py", axes={"seed": (1,), "config.seed": (1,)}), {},
     "read alike in member names"),
    (sweep.Sweep(recipe="r.py", members=({"dataset": "a"},), axes={"dataset": ("b",)}), {},
     "both in an explicit member and an axis"),
    (sweep.Sweep(recipe="r.py", axes={"dataset": "cifar10"}), {},
     "must be a non-empty list of values"),
    (sweep.Sweep(recipe="r.py", axes={"config.seed": (0, 1)}), {"config.seed": "3"},
     "--set ['config.seed']: the sweep varies these settings"),
    (sweep.Sweep(recipe="r.py:smoke", axes={"dataset": ("a",)}), {},
     "Recipe argument 'smoke' of 'r.py:smoke' is not key=value"),
])
def test_settings_that_cannot_make_distinct_runnable_members_are_explained(
    definition, overrides, message):
  with pytest.raises(errors.ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
    spec.expand(definition, overrides)


def test_a_file_without_get_sweep_or_no_file_is_explained(tmp_path):
  with pytest.raises(errors.ConfigError, match="is not a sweep file"):
    spec.load(str(tmp_path / "missing.py"))
  (tmp_path / "empty.py").write_text("x = 1\n")
  with pytest.raises(errors.ConfigError, match="defines no get_sweep"):
    spec.load(str(tmp_path / "empty.py"))


# --- The sweeps in configs/sweeps/. ----------------------------------------------------------

def _recipe_config(member, workdir, data_dir=None):
  """The member's run config as the command line builds it (tests/test_recipes.py's way)."""
  command = member.command(workdir)
  config = cli.recipe_config(_flag(command, "--config="))
  config.lock()
  for item in command:
    if item.startswith("--config."):
      key, value = item.removeprefix("--config.").split("=", 1)
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass  # A string, as absl passes it.
      config.update_from_flattened_dict({key: value})
  return config


def test_vtab1k_is_the_19_tasks_times_3_seeds_with_the_hyperrule():
  definition = spec.load(f"{SWEEPS}/vtab1k.py:model=BiT-M-R101x3")
  members = spec.expand(definition)
  assert len(members) == 19 * 3 and len(set(_names(members))) == 57
  assert {m.settings["dataset"] for m in members} == set(vtab.TASKS)
  config = _recipe_config(members[0], "/w")
  assert (config.model, config.init) == ("BiT-M-R101x3", "BiT-M-R101x3.npz")
  assert (config.dataset, config.total_steps, config.batch_size) == ("vtab/caltech101", 500, 512)
  assert (config.data.train_split, config.data.eval_split) == ("train800val200", "test")


def test_fewshot_excludes_25_shot_flowers_and_draws_per_seed():
  members = spec.expand(spec.load(f"{SWEEPS}/fewshot.py:seeds=2"))
  assert len(members) == 4 * 4 * 2
  excluded = {m.name: m.excluded for m in members if m.excluded}
  assert sorted(excluded) == ["dataset=oxford_flowers102,examples_per_class=25,seed=0",
                              "dataset=oxford_flowers102,examples_per_class=25,seed=1"]
  assert all("10 images per class" in reason for reason in excluded.values())
  [member] = [m for m in members if m.name == "dataset=cifar100,examples_per_class=5,seed=1"]
  config = _recipe_config(member, "/w")
  assert (config.data.examples_per_class, config.seed, config.data.fewshot_seed) == (5, 1, 1)


def test_standard_is_the_five_full_sets_once():
  members = spec.expand(spec.load(f"{SWEEPS}/standard.py"))
  assert [m.settings["dataset"] for m in members] == [
      "cifar10", "cifar100", "oxford_iiit_pet", "oxford_flowers102", "imagenet2012"]


def test_demo_fine_tunes_its_upstream_model_and_the_same_from_scratch(synthetic_data_dir):
  definition = spec.load(f"{SWEEPS}/demo.py")
  members = spec.expand(definition, {"data_dir": synthetic_data_dir})
  assert len(members) == 3 * 2 * 2
  [upstream] = spec.prerequisite_runs(definition)
  assert upstream.command("/w")[3:5] == ["--config=configs/demo.py", "--workdir=/w/upstream"]
  by_init = {m.labels["init"]: _recipe_config(m, "/w") for m in members[:4]}
  assert by_init["upstream"].init == "/w/upstream" and by_init["scratch"].init == ""
  demo_upstream = _recipe_config(upstream, "/w")
  for config in by_init.values():
    # The init must fit: the upstream run's network at its resolution.
    assert (config.model, config.data.crop) == (demo_upstream.model, demo_upstream.data.crop)
    # The HyperRule's own choice for 64x64 px images stays on record beside the override.
    assert config.recipe_notes.resolution_rule.endswith("resize to 160, random crop 128")
  smoke = spec.load(f"{SWEEPS}/demo.py:smoke")
  [smoke_upstream] = spec.prerequisite_runs(smoke)
  assert _recipe_config(smoke_upstream, "/w").data.crop == _recipe_config(
      spec.expand(smoke, {"data_dir": synthetic_data_dir})[0], "/w").data.crop


def test_distill_crosses_flowers_and_pets_each_from_its_teacher_with_the_three_variants():
  members = spec.expand(spec.load(f"{SWEEPS}/distill.py:flowers=/t/f.npz;/t/g.npz,seeds=2"))
  assert len(members) == 2 * 3 * 2
  assert _names(members)[:3] == [
      "dataset=oxford_flowers102,teacher=f.npz+g.npz,variant=fast,seed=0",
      "dataset=oxford_flowers102,teacher=f.npz+g.npz,variant=fast,seed=1",
      "dataset=oxford_flowers102,teacher=f.npz+g.npz,variant=medium,seed=0"]
  assert _names(members)[-1] == ("dataset=oxford_iiit_pet,teacher=R152x2_T_pet128.npz,"
                                 "variant=long,seed=1")
  configs = {(m.settings["dataset"], m.settings["variant"], m.settings["config.seed"]):
             _recipe_config(m, "/w") for m in members}
  flowers_fast = configs["oxford_flowers102", "fast", 1]
  assert flowers_fast.distill.teacher == "/t/f.npz;/t/g.npz" and flowers_fast.seed == 1
  assert (flowers_fast.model, flowers_fast.data.crop) == ("BiT-S-R50x1", 128)
  assert configs["oxford_iiit_pet", "long", 0].distill.teacher == "R152x2_T_pet128.npz"
  # Each member is the recipe's variant: its epochs, temperature and rate (the paper's Tab. 4).
  for (dataset, variant, _), config in configs.items():
    recipe = cli.recipe_config(f"configs/distill.py:teacher=t.npz,dataset={dataset},"
                               f"variant={variant}")
    assert ((config.total_steps, config.lr, config.weight_decay, config.distill.temperature)
            == (recipe.total_steps, recipe.lr, recipe.weight_decay,
                recipe.distill.temperature)), (dataset, variant)
  assert configs["oxford_flowers102", "fast", 0].distill.temperature == 10.0
  assert (configs["oxford_iiit_pet", "long", 0].total_steps
          > configs["oxford_iiit_pet", "medium", 0].total_steps
          > configs["oxford_iiit_pet", "fast", 0].total_steps)


def test_distill_demo_distils_from_the_demo_teacher_and_trains_the_same_on_labels():
  for arg, crop in (("demo", 32), ("smoke", 16)):
    definition = spec.load(f"{SWEEPS}/distill.py:{arg}")
    [teacher] = spec.prerequisite_runs(definition)
    assert teacher.command("/w")[4] == "--workdir=/w/teacher"
    distilled, labels = spec.expand(definition)
    assert (distilled.name, labels.name) == ("distill.teacher=demo", "distill.teacher=labels")
    distilled, labels = _recipe_config(distilled, "/w"), _recipe_config(labels, "/w")
    assert distilled.distill.teacher == "/w/teacher" and labels.distill.teacher == ""
    # The same student, steps, optimizer and data; only the targets differ.
    assert distilled.to_dict() == {**labels.to_dict(), "distill": distilled.distill.to_dict()}
    assert distilled.data.crop == crop
    # The teacher classifies the student's classes: the demo's upstream run on the same data.
    assert _recipe_config(teacher, "/w").dataset == distilled.dataset


# --- The command line without training. ------------------------------------------------------

def _sweep_cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "big_transfer.sweep", *args], cwd=cli.REPO,
                        text=True, capture_output=True, timeout=300,
                        env=cli.env_with_devices(1))


def test_print_commands_prints_one_line_per_runnable_member(tmp_path):
  result = _sweep_cli(f"--sweep={SWEEPS}/fewshot.py", f"--workdir={tmp_path}",
                      "--print_commands", "--only=flowers")
  assert result.returncode == 0, result.stderr
  members = [m for m in spec.expand(spec.load(f"{SWEEPS}/fewshot.py"))
             if "flowers" in m.name and not m.excluded]
  assert result.stdout.splitlines() == [m.shell_line(str(tmp_path)) for m in members]
  assert len(members) == 9  # 1, 5 and 10 shots x 3 seeds; 25-shot is excluded.
  assert not list(tmp_path.iterdir())  # Printing writes nothing.


def test_a_filter_that_matches_nothing_fails_in_one_line(tmp_path):
  result = _sweep_cli(f"--sweep={SWEEPS}/vtab1k.py", f"--workdir={tmp_path}", "--dry_run",
                      "--only=imagenet")
  cli.assert_fails_in_one_line(result, "--only=imagenet matches none of the 57 members")
