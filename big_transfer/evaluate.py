"""Evaluates any checkpoint on ImageNet and its robustness sets (docs/evaluation.md):

    python -m big_transfer.evaluate --init=PATH --evals=NAME[,NAME...] --workdir=OUT \
        [--config.KEY=VALUE ...]

PATH is a published-layout `.npz` (BiT-M-R50x1-ILSVRC2012.npz), a training run's workdir, or an
export of one (`.npz` or `.msgpack` with its `.json` metadata); the model and its classes are read
from it. NAMEs are evaluators (big_transfer.data.eval_sets: imagenet2012, imagenet2012_minival,
imagenet2012_real, imagenet_v2[:CONFIG], imagenet_a, imagenet_r, imagenet_sketch,
objectnet:DIR). Writes OUT/eval.json and OUT/eval.md, and prints one line per evaluator. Every
data set is checked before the first image is read: one that is not prepared ends the program
in one `error:` line with the command that prepares it.
"""

import dataclasses

import jax
import ml_collections
from absl import flags, logging
from etils import epath
from ml_collections import config_flags

from big_transfer import atomic, command_line, data, errors, sharding
from big_transfer.data import config as data_config
from big_transfer.launch import distributed
from big_transfer.training import checkpoints, evaluators, experiment, trained

RESULTS_JSON = "eval.json"
RESULTS_MARKDOWN = "eval.md"
# A published .npz says nothing of how it was trained: BiT's upstream view at 224 px.
NPZ_RECIPE, NPZ_RESOLUTION = "upstream", 224


def defaults() -> ml_collections.ConfigDict:
  """The `--config.KEY` settings of the program, with their defaults."""
  config = ml_collections.ConfigDict()
  config.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir.
  config.resolution = 0     # side of the evaluated square; 0: the model's (224 for an .npz).
  config.view = ""          # "finetune" (resize to it) or "upstream" (shorter side, central
                            # crop); "": the model's recipe ("upstream" for an .npz).
  config.label_map = ""     # "i21k_to_i1k" scores a 21,843-way BiT-M head on ImageNet-1k.
  config.batch_size = 256   # global.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  return config


def load_model(init) -> trained.Model:
  """Reads a published `.npz`, a run's workdir (its latest checkpoint) or an export; a bare
  `.npz` gets BiT's upstream view at 224 px."""
  model = trained.read(init)
  if model is None:
    raise errors.CheckpointError(f"--init={init} is not a published .npz, a run's workdir (with "
                                 f"{checkpoints.SUBDIR}/) or a .npz/.msgpack export; a SavedModel "
                                 "export is for serving: evaluate the workdir it came from.")
  if model.resolution is None:
    model = dataclasses.replace(model, resolution=NPZ_RESOLUTION, recipe=NPZ_RECIPE)
  return model


def run(init: str, names: list[str], workdir, config: ml_collections.ConfigDict) -> dict:
  """Evaluates `init` on the evaluators `names`; writes and returns the results."""
  for path, flag in ((init, "--init"), (config.data_dir, "--config.data_dir"),
                     (workdir, "--workdir")):
    atomic.check_scheme(path, flag)
  eval_sets = evaluators.check(names, config.label_map)
  if not eval_sets:
    raise errors.ConfigError("--evals names no evaluator; e.g. --evals=imagenet2012,imagenet_a.")
  if config.view and config.view not in data_config.RECIPES:
    raise errors.ConfigError(f"--config.view must be one of {data_config.RECIPES}, got "
                             f"{config.view!r}.")
  for eval_set in eval_sets:  # Each set before any image, so a missing one fails at once.
    data.check_eval_set(eval_set, config.data_dir)
  model = load_model(init)
  evaluators.check_head(model.network.num_classes, config.label_map)
  resolution, view = config.resolution or model.resolution, config.view or model.recipe
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  sharding.check_batch_size(config.batch_size, mesh)
  batch = sharding.batch_sharding(mesh)
  param_shardings = sharding.param_shardings(model.params, mesh)
  params = jax.device_put(model.params, param_shardings)
  logits = experiment.jit_logits(model.network, param_shardings, batch)
  scores = {eval_set.name: evaluators.evaluate(
      eval_set, params, logits, data_dir=config.data_dir, recipe=view, crop=resolution,
      batch_size=config.batch_size, batch_sharding=batch, label_map=config.label_map,
      progress=True) for eval_set in eval_sets}
  summary = {"init": str(init), "model": model.description,
             "num_params": int(sum(x.size for x in jax.tree.leaves(model.params))),
             "resolution": resolution, "view": view, "label_map": config.label_map or None,
             "evaluators": scores}
  if jax.process_index() == 0:
    out = epath.Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / RESULTS_JSON, summary)
    atomic.write_text(out / RESULTS_MARKDOWN, markdown(summary))
  return summary


def _percent(value: float) -> str:
  return f"{100 * value:.2f}"


def markdown(summary: dict) -> str:
  """eval.md: timm's results columns (top-1 and top-5 with their errors), an evaluator a row."""
  scores = summary["evaluators"]
  lines = [f"# {summary['model']}", "",
           f"{summary['num_params']:,} parameters; {summary['resolution']} px, "
           f"{summary['view']} view" + (f", label map {summary['label_map']}"
                                        if summary["label_map"] else "") + ".", "",
           "| model | img_size | " + " | ".join(scores) + " |",
           "|---|---:|" + "---:|" * len(scores),
           f"| {summary['model']} | {summary['resolution']} | "
           + " | ".join(_percent(s["accuracy"]) for s in scores.values()) + " |", "",
           "| evaluator | top1 | top1_err | top5 | top5_err | examples | notes |",
           "|---|---:|---:|---:|---:|---:|---|"]
  for name, s in scores.items():
    notes = []
    if "accuracy_1000way" in s:
      notes.append(f"argmax over {s['classes']} classes; over all 1000: "
                   f"{_percent(s['accuracy_1000way'])}")
    if "excluded" in s:
      notes.append(f"{s['excluded']} examples with an empty label set excluded")
    lines.append(f"| {name} | {_percent(s['accuracy'])} | {_percent(1 - s['accuracy'])} | "
                 f"{_percent(s['top5'])} | {_percent(1 - s['top5'])} | {s['examples']} | "
                 f"{'; '.join(notes)} |")
  return "\n".join(lines) + "\n"


def result_line(name: str, scores: dict) -> str:
  """The line the program ends with for one evaluator."""
  line = (f"{name}: top-1 {_percent(scores['accuracy'])}% top-5 {_percent(scores['top5'])}% "
          f"({scores['examples']} examples")
  if "accuracy_1000way" in scores:
    line += f"; 1000-way top-1 {_percent(scores['accuracy_1000way'])}%"
  if "excluded" in scores:
    line += f"; {scores['excluded']} excluded"
  return line + ")"


def _define_flags() -> None:
  # Defined only when run as a program, so importing the library registers no flags.
  flags.DEFINE_string("init", None, "A published .npz, a run's workdir, or a .npz/.msgpack "
                      "export.")
  flags.DEFINE_list("evals", None, "Evaluators, comma-separated (docs/evaluation.md).")
  flags.DEFINE_string("workdir", None, "Where eval.json and eval.md go (local or gs://).")
  config_flags.DEFINE_config_dict("config", defaults(), lock_config=True)
  flags.mark_flags_as_required(["init", "evals", "workdir"])


def main(argv) -> None:
  del argv  # Flags only.
  logging.set_verbosity(logging.ERROR)  # orbax and TF log every step of a restore.
  distributed.initialize()
  args = flags.FLAGS
  with distributed.peers_watched():
    summary = run(args.init, args.evals, args.workdir, args.config)
  if jax.process_index() == 0:
    for name, scores in summary["evaluators"].items():
      print(result_line(name, scores))


if __name__ == "__main__":
  _define_flags()
  command_line.run(main)
