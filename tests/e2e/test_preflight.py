"""The pre-flight compile: slice names, data facts without data, the fit decision and its advice,
and real compiles for TPU slices on this CPU machine (with libtpu; skipped where it is not
installed)."""

import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

import cli
from big_transfer import command_line, data, errors, models, sharding
from big_transfer import preflight as program
from big_transfer.launch import fit, preflight, topology_compile, tpu_types
from big_transfer.models import interop
from big_transfer.recipes import schema as config_lib
from big_transfer.training import experiment

GIB = 2**30
_TINY_INFO = data.DatasetInfo(num_train_examples=64, image_size=(32, 32), num_classes=4,
                              class_names=None)
MIB = 2**20


@pytest.mark.parametrize("name, jax_topology, chips, devices, chip_config", [
    ("v4-32", "v4:2x2x4", 16, 16, "megacore"),      # TensorCores in the name, 2 per chip.
    ("v4-8", "v4:2x2x1", 4, 4, "megacore"),
    ("v5litepod-16", "v5e:4x4", 16, 16, None),
    ("v5p-128", "v5p:4x4x4", 64, 64, "megacore"),
    ("v6e-64", "v6e:8x8", 64, 64, None),
    ("v3-8", "v3:2x2", 4, 8, None),                 # A v3 TensorCore is a device of its own.
])
def test_accelerator_types_map_to_jax_topologies(name, jax_topology, chips, devices, chip_config):
  tpu_slice = tpu_types.parse_slice(name)
  assert tpu_slice.jax_topology == jax_topology
  assert tpu_slice.chips == chips and tpu_slice.devices == devices
  assert tpu_slice.chip_config_name == chip_config
  assert tpu_slice.accelerator_type == name


@pytest.mark.parametrize("name, accelerator_type, chips", [
    ("v5e:2x2", "v5litepod-4", 4), ("v4:2x2x4", "v4-32", 16), ("v6e:1x1", "v6e-1", 1),
    ("v5litepod:4x8", "v5litepod-32", 32), ("v4:2x2x3", "v4-24", 12)])
def test_jax_topology_names_pass_through(name, accelerator_type, chips):
  tpu_slice = tpu_types.parse_slice(name)
  assert tpu_slice.jax_topology == name.replace("v5litepod:", "v5e:")
  assert tpu_slice.accelerator_type == accelerator_type and tpu_slice.chips == chips


@pytest.mark.parametrize("name", ["v9-8", "v5e-4", "tpu", "v4:2", "v5e:4x4x4x4"])
def test_an_unknown_topology_is_named_with_the_known_names(name):
  with pytest.raises(errors.ConfigError, match=re.escape(repr(name))) as raised:
    tpu_types.parse_slice(name)
  for known in ("v4-32", "v5litepod-16", "v5e:4x4", "v4:2x2x4", "v3, v4, v5e, v5p, v6e"):
    assert known in str(raised.value)


def test_a_type_without_standard_arrangement_asks_for_a_jax_topology():
  with pytest.raises(errors.ConfigError, match=r"v4-24 \(12 chips\).*v4:AxBxC of 12 chips"):
    tpu_types.parse_slice("v4-24")
  with pytest.raises(errors.ConfigError, match="multiple of 2"):
    tpu_types.parse_slice("v4-7")


def test_memory_and_peak_per_device_follow_the_chip():
  v3, v4 = tpu_types.GENERATIONS["v3"], tpu_types.GENERATIONS["v4"]
  assert v3.hbm_bytes_per_device == v3.hbm_gib * GIB / 2  # Two devices share a v3 chip.
  assert v3.peak_bf16_flops_per_device == v3.peak_bf16_tflops * 1e12 / 2
  assert v4.hbm_bytes_per_device == v4.hbm_gib * GIB      # Megacore: the chip is the device.
  for generation in tpu_types.GENERATIONS.values():
    assert 16 <= generation.hbm_gib <= 96 and 100 <= generation.peak_bf16_tflops <= 1000


def _config(**overrides):
  config = config_lib.base()
  config.update(overrides)
  return config


def test_data_facts_come_from_the_table_or_the_config_without_data():
  info = preflight.dataset_info_without_data(_config(dataset="cifar10"))
  assert (info.num_classes, info.num_train_examples, info.image_size) == (10, 49_000, (32, 32))
  assert preflight.dataset_info_without_data(_config(dataset="vtab/dtd")).num_classes == 47
  assert preflight.dataset_info_without_data(
      _config(dataset="imagenet2012:5.1.0")).num_classes == 1000
  own = preflight.dataset_info_without_data(_config(dataset="imagenet21k", num_classes=21_843))
  assert own.num_classes == 21_843
  with pytest.raises(errors.ConfigError, match=r"'my_set' is not known.*--config.num_classes=N"):
    preflight.dataset_info_without_data(_config(dataset="my_set"))


def _footprint(state_gib: float, temporaries_gib: float | None = None, batch_mib: float = 1):
  """Parameters and momentum of equal size; the total adds the batch and the temporaries."""
  params = int(state_gib * GIB / 2)
  batch = int(batch_mib * MIB)
  if temporaries_gib is None:
    return fit.Footprint(params=params, opt_state=params, batch=batch)
  temporaries = int(temporaries_gib * GIB)
  return fit.Footprint(params=params, opt_state=params, batch=batch,
                             temporaries=temporaries, total=2 * params + batch + temporaries)


def test_parameters_over_half_the_memory_are_split_with_fsdp():
  mesh = {"data": 8, "fsdp": 1}
  # 12 GiB of parameters and momentum: half of it per device is under half of 16 GiB.
  advice = fit.advice(_footprint(12, 30), 16 * GIB, mesh, _config())
  assert "--config.mesh.fsdp=2 " in advice and "about 6.00 GiB per device" in advice
  assert "--config.mesh.data" not in advice
  # 40 GiB needs fsdp=8 (5 GiB each); a fixed data axis must make room.
  advice = fit.advice(_footprint(40), 16 * GIB, mesh, _config(mesh={"data": 8, "fsdp": 1}))
  assert "--config.mesh.fsdp=8 --config.mesh.data=-1" in advice
  advice = fit.advice(_footprint(200), 16 * GIB, mesh, _config())
  assert "even split over all 8 devices" in advice and "more chips" in advice


def test_activations_over_the_memory_ask_for_smaller_micro_batches():
  mesh = {"data": 4, "fsdp": 1}
  config = _config(batch_size=512, grad_accum_steps=1)
  # 40 GiB of temporaries shrink with the micro-batch: /3 would fit (13.3 GiB + the rest) but
  # 512 is not a multiple of 4 devices x 3; /4 fits and divides.
  advice = fit.advice(_footprint(1, 40), 16 * GIB, mesh, config)
  assert "--config.grad_accum_steps=4 " in advice and "--config.batch_size to 128)" in advice
  config = _config(batch_size=512, grad_accum_steps=2)
  advice = fit.advice(_footprint(1, 20), 16 * GIB, mesh, config)
  assert "--config.grad_accum_steps=4 " in advice and "batch_size to 256)" in advice


def test_when_xla_refused_the_advice_is_the_next_accumulation_or_more():
  advice = fit.advice(_footprint(1), 16 * GIB, {"data": 4, "fsdp": 1},
                            _config(batch_size=64))
  assert "--config.grad_accum_steps=2 or more" in advice and "batch_size to 32 or more" in advice


def test_one_example_per_device_that_does_not_fit_asks_for_more_chips():
  advice = fit.advice(_footprint(1, 400), 16 * GIB, {"data": 4, "fsdp": 1},
                            _config(batch_size=16, grad_accum_steps=1))
  assert "even one example per device" in advice and "more chips" in advice


def test_flops_of_an_accumulated_step_equal_those_of_the_whole_batch():
  # XLA counts the accumulation loop's body once; the pre-flight's figure must not depend on
  # how the same global batch is split (the once-per-step update is a small part of the step).
  flops = {}
  for accum in (1, 4):
    config = _config(model="R14x1", batch_size=64, grad_accum_steps=accum, num_classes=4)
    config.data.crop = 32
    exp = experiment.build(config, sharding.make_mesh(1, 1, devices=jax.devices()[:1]),
                           dataset_info=_TINY_INFO)
    state = exp.steps.create(jax.random.key(0))
    batch = {"image": jax.numpy.zeros((64, 32, 32, 3)), "label": jax.numpy.zeros((64, 4))}
    flops[accum] = experiment.train_step_flops(exp.steps.train.lower(state, batch).compile(), accum)
  # Without the loop counted per micro-batch it would be a quarter; the update, counted 4x, is
  # what is left over.
  assert flops[4] == pytest.approx(flops[1], rel=0.1)


def _estimate(total_gib: float, flops: float = 1e12) -> preflight.Estimate:
  """An Estimate of a compiled R50x1 step at 224 px, batch 512, on a v5litepod-4 (16 GiB/chip)."""
  config = _config(model="BiT-S-R50x1", batch_size=512)
  exp = types.SimpleNamespace(
      config=config, input_cfg=types.SimpleNamespace(crop=224),
      model=types.SimpleNamespace(num_classes=1000), mesh=types.SimpleNamespace(
          shape={"data": 4, "fsdp": 1}))
  footprint = _footprint(0.2, temporaries_gib=total_gib - 0.2)
  return preflight.Estimate(exp, tpu_types.parse_slice("v5litepod-4"), footprint, flops,
                            compile_seconds=300, mfu=0.5)


def test_step_time_and_throughput_follow_the_flops_and_the_assumed_utilization():
  estimate = _estimate(3, flops=197e12 * 0.5 * 0.25)  # A quarter second at 50% of v5e's peak.
  assert estimate.fits
  assert estimate.step_seconds == pytest.approx(0.25)
  report = estimate.report()
  assert "step time: 250 ms at 50% of the 197 TFLOP/s bf16 peak" in report
  assert "images/s: 512 per chip, 2,048 in all" in report  # 512 images per 0.25 s on 4 chips.
  assert "total: 3.00 GiB of 16.00 GiB HBM (18.8%)" in report


def test_a_compiled_step_over_the_memory_prints_the_report_and_one_error_line(capsys,
                                                                              monkeypatch):
  estimate = _estimate(20)
  assert not estimate.fits
  monkeypatch.setattr(preflight, "estimate", lambda config, topology, mfu: estimate)
  code, out, printed = _run_in_process(capsys, estimate.exp.config, "v5litepod-4")
  assert code == 1 and "\ndoes not fit: 20.00 GiB of 16.00 GiB per device" in out
  assert len(printed) == 1
  assert printed[0].startswith("error: BiT-S-R50x1 at 224 px with batch 512 does not fit "
                               "v5litepod-4: it needs 20.00 GiB per device of 16.00 GiB HBM")
  assert "--config.grad_accum_steps=2 " in printed[0]


def _run_in_process(capsys, config, topology):
  code = command_line.exit_code(lambda argv: program.report(config, topology, mfu=0.4),
                                ["preflight"])
  captured = capsys.readouterr()
  errors_printed = [line for line in captured.err.splitlines() if line.startswith("error: ")]
  return code, captured.out, errors_printed


def test_without_libtpu_the_preflight_says_how_to_install_it(capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # `import libtpu` raises ImportError.
  code, out, printed = _run_in_process(capsys, _config(dataset="cifar10"), "v5litepod-4")
  assert code == 1 and out == ""
  assert len(printed) == 1 and "pip install -e '.[tpu]'" in printed[0]


def test_a_bad_topology_fails_in_one_line(capsys):
  code, _, printed = _run_in_process(capsys, _config(dataset="cifar10"), "v5e-16")
  assert code == 1 and len(printed) == 1
  assert "'v5e-16'" in printed[0] and "v5litepod-16" in printed[0]


def _param_shapes(num_classes: int) -> dict:
  """{"params": ShapeDtypeStructs} of R14x1 with `num_classes` outputs."""
  model = models.create("BiT-S-R14x1", num_classes=num_classes)
  return jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, 16, 16, 3), "float32"))


def _param_bytes(num_classes: int) -> int:
  """Bytes of the float32 parameters of R14x1 with `num_classes` outputs."""
  return sum(leaf.size * 4 for leaf in jax.tree.leaves(_param_shapes(num_classes)))


def _tiny_config(**overrides):
  """The demo's smoke run (R14x1 at 16 px, batch 16) on CIFAR-10's facts."""
  config = _config(model="BiT-S-R14x1", dataset="cifar10", batch_size=16)
  config.data.crop = 16
  config.update(overrides)
  return config


def test_when_xla_runs_out_of_memory_the_step_does_not_fit(monkeypatch):
  # XLA's refusal, without a TPU compile: the step is laid out on the CPU devices and the
  # compile answers as libtpu's compiler does for a step over the HBM.
  monkeypatch.setattr(topology_compile, "compile_devices", lambda tpu_slice: jax.devices()[:4])

  def out_of_memory(lowered):
    raise jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (61.15G) exceeds available HBM (15.75G).\nmore details")

  monkeypatch.setattr(jax.stages.Lowered, "compile", out_of_memory)
  with pytest.raises(errors.ConfigError) as raised:
    preflight.estimate(_tiny_config(), "v5litepod-4")
  message = str(raised.value)
  assert message.startswith("BiT-S-R14x1 at 16 px with batch 16 does not fit v5litepod-4")
  assert "exceeds available HBM (15.75G)" in message and "more details" not in message
  assert "--config.grad_accum_steps=2 or more" in message
  # Per device: all parameters and their momentum (replicated), a quarter of the batch.
  state = re.search(r"parameters \+ optimizer state ([\d.]+) MiB, batch ([\d.]+) KiB", message)
  assert state, message
  assert float(state[1]) == pytest.approx(2 * _param_bytes(10) / MIB, abs=0.01)
  assert float(state[2]) == pytest.approx(4 * (16 * 16 * 3 + 10) * 4 / 2**10, abs=0.01)


def test_a_distillation_step_is_compiled_with_the_teachers_and_counts_them(monkeypatch,
                                                                          tmp_path):
  # As above, without a TPU compile: the compile receives the lowered step and says it does
  # not fit, so the message shows what the pre-flight counted before compiling.
  monkeypatch.setattr(topology_compile, "compile_devices", lambda tpu_slice: jax.devices()[:4])
  lowered_steps = []

  def out_of_memory(lowered):
    lowered_steps.append(lowered)
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM.")

  monkeypatch.setattr(jax.stages.Lowered, "compile", out_of_memory)
  # The student's network as the teacher; a compile needs its shapes, not its values.
  teacher_params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype),
                                _param_shapes(10)["params"])
  interop.save_bit_npz(teacher_params, tmp_path / "teacher.npz")
  config = _tiny_config()  # CIFAR-10: 10 classes, the teacher's.
  config.distill.teacher = str(tmp_path / "teacher.npz")
  with pytest.raises(errors.ConfigError) as raised:
    preflight.estimate(config, "v5litepod-4")
  # The step's third argument is the teacher: its parameters' shapes, laid out on the slice.
  [lowered] = lowered_steps
  _, _, teacher_args = lowered.args_info[0]
  shapes = lambda tree: [tuple(leaf.shape) for leaf in jax.tree.leaves(tree)]
  assert shapes(teacher_args) == shapes((teacher_params,))
  # Replicated (fsdp 1), each device holds the parameters, their momentum and the teacher, here
  # the student's network: three times the parameters' bytes.
  held = re.search(r"parameters \+ optimizer state \+ teachers ([\d.]+) MiB, batch",
                   str(raised.value))
  assert held, str(raised.value)
  assert float(held[1]) == pytest.approx(3 * _param_bytes(10) / MIB, abs=0.01)


@cli.needs_libtpu
def test_v4_and_v5p_devices_are_chips_and_v3_devices_are_tensorcores(monkeypatch):
  cli.forget_libtpu_variables(monkeypatch)
  for name, kind, cores in (("v4-8", "TPU v4", 2), ("v5p-8", "TPU v5", 2), ("v3-8", "TPU v3", 1),
                            ("v5litepod-1", "TPU v5 lite", 1)):
    tpu_slice = tpu_types.parse_slice(name)
    devices = topology_compile.compile_devices(tpu_slice)
    assert len(devices) == tpu_slice.devices, name
    assert {(d.device_kind, d.num_cores) for d in devices} == {(kind, cores)}, name
  with pytest.raises(errors.ConfigError, match="libtpu has no TPU topology v5e:3x3"):
    topology_compile.compile_devices(tpu_types.parse_slice("v5e:3x3"))


def _preflight_cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "big_transfer.preflight", *args], cwd=cli.REPO,
                        text=True, capture_output=True, timeout=900, env=cli.env_with_devices(1))


def _reported_bytes(report: str, name: str) -> float:
  match = re.search(rf"^  {name}: ([\d.]+) (B|KiB|MiB|GiB)", report, re.MULTILINE)
  assert match, report
  return float(match[1]) * {"B": 1, "KiB": 2**10, "MiB": MIB, "GiB": GIB}[match[2]]


@cli.needs_libtpu
def test_the_demo_compiles_for_a_v4_slice_and_fits_without_being_told_its_classes():
  # v4-8: 4 chips of 2 TensorCores compiled for as 4 devices (megacore); 32 GiB each. The
  # built-in data set's 90 classes come from its code: nothing is prepared, no flag is needed.
  result = _preflight_cli("--config=configs/demo.py:smoke", "--topology=v4-8")
  assert result.returncode == 0, result.stderr[-3000:]
  report = result.stdout
  assert report.splitlines()[0] == ("run: BiT-S-R14x1 (float32) at 16 px, 90 classes, batch 16 "
                                    "(4 per device and micro-batch, grad_accum_steps 1)")
  assert "slice: v4-8 = JAX topology v4:2x2x1, 4 chips, 4 devices (a device is a chip)" in report
  # Replicated (fsdp 1): each device holds every parameter, float32.
  param_bytes = _param_bytes(90)
  assert _reported_bytes(report, "parameters") == pytest.approx(param_bytes, rel=1e-3)
  assert _reported_bytes(report, "optimizer state") == pytest.approx(param_bytes, rel=1e-3)
  # 4 of the 16 images and their one-hot labels, float32.
  assert _reported_bytes(report, "batch") == pytest.approx(4 * (16 * 16 * 3 + 90) * 4, rel=1e-2)
  temporaries = _reported_bytes(report, "temporaries")
  total = _reported_bytes(report, "total")
  assert temporaries > 0 and 2 * param_bytes + temporaries < total < 32 * GIB
  assert "of 32.00 GiB HBM" in report
  flops = re.search(r"FLOPs per step: ([\d.]+) (\w)FLOP \(([\d.]+) (\w)FLOP per image\)", report)
  assert flops and float(flops[1]) > 0, report
  assert re.search(r"step time: [\d.]+ \w*s at 40% of the 275 TFLOP/s bf16 peak", report), report
  assert re.search(r"^images/s: [\d,]+ per chip", report, re.MULTILINE), report
  assert report.rstrip().endswith("per device") and "\nfits: " in report


@cli.needs_libtpu
def test_parameters_beyond_the_memory_do_not_fit_and_fsdp_is_suggested():
  # A 2M-class head: 2048 x 2M float32 weights and their momentum are 30.5 GiB on each v5e chip
  # of 16 GiB, known before compiling.
  result = _preflight_cli("--config=configs/demo.py:smoke", "--topology=v5e:2x2",
                          "--config.num_classes=2000000")
  line = cli.assert_fails_in_one_line(result, "does not fit v5litepod-4",
                                      "of 16.00 GiB HBM", "--config.mesh.fsdp=4")
  assert result.stdout == "", line


@cli.needs_libtpu
def test_an_eval_batch_that_does_not_divide_over_the_slice_is_one_line():
  result = _preflight_cli("--config=configs/demo.py:smoke", "--topology=v4-8",
                          "--config.eval_batch_size=6")
  line = cli.assert_fails_in_one_line(result)
  assert line == ("error: eval_batch_size 6 is not divisible by the 4 batch devices (data=4 x "
                  "fsdp=1); set --config.eval_batch_size to a multiple of 4.")
  assert result.stdout == ""
