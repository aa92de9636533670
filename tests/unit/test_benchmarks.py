"""The benchmarks at a tiny size: their fields, JSON and ratio lines."""

import json

import pytest

import cli
from benchmarks import device_peaks, group_norm, memory
from big_transfer.launch import tpu_types


def test_memory_benchmark_compares_data_parallel_and_fsdp(capsys, monkeypatch):
  # The test process already has 8 fake devices; main() sets the variables for a fresh process.
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  tiny = ["--model=R14x1", "--devices=8", "--fsdp=8", "--batch=1", "--resolution=16",
          "--precision=f32", "--json"]
  memory.main(tiny)
  result = json.loads(capsys.readouterr().out)
  data_parallel, fsdp = result["rows"]
  assert (data_parallel["layout"], fsdp["layout"]) == ("data-parallel", "fsdp")
  assert data_parallel["temp_bytes"] > 0 and data_parallel["total_bytes"] > (
      data_parallel["param_opt_bytes"])
  assert data_parallel["mesh"] == {"data": 8, "fsdp": 1} and fsdp["mesh"] == {"data": 1, "fsdp": 8}
  # Sharding parameters and momentum 8 ways; the small ones (norms, head bias) stay replicated.
  assert result["ratio"] == pytest.approx(
      fsdp["param_opt_bytes"] / data_parallel["param_opt_bytes"])
  assert 1 / 8 <= result["ratio"] < 1 / 6
  assert fsdp["batch_bytes"] == data_parallel["batch_bytes"]
  assert memory.report(result).splitlines()[-1] == (
      f"fsdp/data-parallel param+opt bytes = {result['ratio']:.2f}")

  memory.main([*tiny, "--remat=none,unit", "--no_compile"])  # Shapes only: no compile.
  rows = {(row["layout"], row["remat"]): row for row in json.loads(capsys.readouterr().out)["rows"]}
  assert rows["data-parallel", "none"]["param_opt_bytes"] == data_parallel["param_opt_bytes"]
  assert rows["data-parallel", "unit"]["activation_bytes"] < data_parallel["activation_bytes"]


def test_memory_benchmark_rejects_an_fsdp_size_that_does_not_divide_the_devices(capsys):
  with pytest.raises(SystemExit):
    memory.parse_args(["--devices=8", "--fsdp=3"])
  assert "--fsdp=3 must divide --devices=8" in capsys.readouterr().err


def test_device_peaks_come_from_the_tpu_table_and_the_gpu_datasheets():
  v3 = tpu_types.GENERATIONS["v3"]
  assert device_peaks.peak_flops_per_device("TPU v3", "bf16") == v3.peak_bf16_flops_per_device
  assert device_peaks.peak_flops_per_device("TPU v5 lite", "f32") == (
      tpu_types.GENERATIONS["v5litepod"].peak_bf16_flops_per_device)
  assert device_peaks.peak_flops_per_device("NVIDIA H100 80GB HBM3", "bf16") == 989e12
  assert device_peaks.peak_flops_per_device("NVIDIA A100-SXM4-80GB", "f32") == 156e12
  assert device_peaks.peak_flops_per_device("cpu", "f32") is None
  with pytest.raises(ValueError, match="precision must be one of .*'fp8'"):
    device_peaks.peak_flops_per_device("TPU v4", "fp8")


def test_group_norm_benchmark_times_three_norms_and_measures_their_precision(capsys):
  group_norm.main(["--shape=2,4,4,64", "--shape=1,2,2,32", "--rounds=3", "--steps=1", "--json"])
  result = json.loads(capsys.readouterr().out)
  assert [row["shape"] for row in result["rows"]] == [[2, 4, 4, 64], [1, 2, 2, 32]]
  for row in result["rows"]:
    assert set(row["seconds"]) == {"ours", "flax two-pass", "flax fast"}
    assert all(s > 0 for s in row["seconds"].values())
  assert result["ratio"] == pytest.approx(
      (result["rows"][0]["two_pass_over_ours"] + result["rows"][1]["two_pass_over_ours"]) / 2)
  # Groups of mean 1e4 and spread 1: E[x^2] - E[x]^2 loses them, ours and two passes do not.
  errors = result["large_mean_error"]
  assert errors["ours"] < 3e-3 and errors["flax two-pass"] < 3e-3 and errors["flax fast"] > 1
  assert group_norm.report(result).splitlines()[-1] == f"two-pass/ours = {result['ratio']:.2f}"


def test_group_norm_benchmark_rejects_a_shape_without_whole_groups(capsys):
  with pytest.raises(SystemExit):
    group_norm.parse_args(["--shape=2,4,4,48"])
  assert "--shape=2,4,4,48: give B,H,W,C with C a multiple of 32" in capsys.readouterr().err


@cli.needs_libtpu
def test_memory_benchmark_compiles_for_a_tpu_slice(capsys, monkeypatch):
  cli.forget_libtpu_variables(monkeypatch)
  result = memory.measure(memory.parse_args([
      "--model=R14x1", "--topology=v5litepod-1", "--fsdp=1", "--batch=2", "--resolution=16",
      "--precision=bf16"]))
  assert result["devices"] == 1 and result["device_kind"] == "TPU v5 lite"
  data_parallel, fsdp = result["rows"]
  assert fsdp == dict(data_parallel, layout="fsdp")  # One mesh, compiled once.
  assert 0 < data_parallel["temp_bytes"] < data_parallel["total_bytes"]
  assert data_parallel["total_bytes"] > data_parallel["param_opt_bytes"]
  assert "1 TPU v5 lite devices (v5litepod-1)" in memory.report(result).splitlines()[0]


def test_memory_benchmark_takes_devices_from_the_topology(capsys):
  with pytest.raises(SystemExit):
    memory.parse_args(["--topology=v5litepod-4", "--devices=8"])
  assert "--devices and --topology both say how many devices" in capsys.readouterr().err
  assert memory.parse_args(["--topology=v5litepod-4", "--fsdp=4"]).devices == 4
  with pytest.raises(SystemExit):
    memory.parse_args(["--topology=v9-8"])
  assert "--topology=v9-8:" in capsys.readouterr().err
