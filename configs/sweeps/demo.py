"""What transfer buys, on the built-in data, on 2 CPU cores (30 minutes with the cores busy).

    python -m big_transfer.sweep --sweep=configs/sweeps/demo.py --workdir=/tmp/bit_sweep

First the demo's own upstream run (configs/demo.py: R14x1 at 32 px on `bit_synthetic/upstream`)
is trained into WORKDIR/upstream, unless it is there already. Then the same network is
fine-tuned with configs/hyperrule.py on the 10 held-out classes of `bit_synthetic/downstream`
with 1, 5 and 10 examples per class, from the upstream weights (`init=upstream`) and from
scratch (`init=scratch`), 2 seeds each: results.md puts the two side by side.

Not the HyperRule's resolution and length: for these 64x64 px images it picks 160 -> 128 px and
500 steps at batch 512, hours on a CPU. The members override, through `config.` settings, the
resolution to the upstream model's 32 px (precrop 36), the batch to 32 and the run to 60 steps
with a peak rate of 0.01; results.csv and each member's summary.json show the HyperRule's own
decisions beside the values the run used. `smoke` is a handful of steps of it at 16 px (the
tests use it).
"""

from big_transfer import errors, sweep

_UPSTREAM = "upstream"


def get_sweep(arg: str = "") -> sweep.Sweep:
  if arg not in ("", "smoke"):
    raise errors.ConfigError(f"configs/sweeps/demo.py takes no argument or 'smoke', got {arg!r}.")
  smoke = arg == "smoke"
  crop = 16 if smoke else 32       # The upstream run's (configs/demo.py), so its weights fit.
  base = {
      "config.data.precrop": crop + crop // 8,
      "config.data.crop": crop,
      "config.batch_size": 16 if smoke else 32,
      "config.lr": 0.01,
      "config.total_steps": 4 if smoke else 60,
      "config.warmup_steps": 1 if smoke else 6,
      "config.log_every_steps": 2 if smoke else 20,
      "config.checkpoint_every_steps": 2 if smoke else 30,
      "config.eval_every_steps": 0,
      "config.eval_batch_size": 250,
      "config.fewshot.shots": (),    # Fine-tuned members are scored on the test split only.
  }
  # The smoke sweep's upstream run skips its few-shot probes, which no table reports.
  upstream = (sweep.Prerequisite(_UPSTREAM, "configs/demo.py:smoke", {"fewshot.shots": ()})
              if smoke else sweep.Prerequisite(_UPSTREAM, "configs/demo.py"))
  return sweep.Sweep(
      recipe="configs/hyperrule.py:model=BiT-S-R14x1,dataset=bit_synthetic/downstream",
      prerequisites=(upstream,),
      axes={
          "examples_per_class": (1, 5) if smoke else (1, 5, 10),
          "init": (sweep.Labelled(_UPSTREAM, f"{sweep.WORKDIR}/{_UPSTREAM}"),
                   sweep.Labelled("scratch", "")),
          "config.seed": (0, 1),
      },
      base=base)
