#!/usr/bin/env bash
# The TPU VM side of tpu/launch, run on every worker over `gcloud ... ssh --worker=all`.
#
#   tpu/worker.sh setup [--python=3.12] [--wheel=FILE]
#       Run from a freshly unpacked ~/big_transfer.new: moves it to ~/big_transfer and installs
#       it (or the wheel ~/FILE) with JAX for TPUs into ~/big_transfer_env, a uv-made virtual
#       environment (TPU VM images ship an older Python than JAX needs).
#   tpu/worker.sh start ARGS...
#       Runs `python -m big_transfer.main ARGS` in ~/big_transfer, detached from the ssh session,
#       appending its output to ~/big_transfer_run/train.log. Refuses while a job runs.
#   tpu/worker.sh logs [LINES]     follows the log.
#   tpu/worker.sh stop [SECONDS]   SIGTERM: the run saves a checkpoint and exits; waits for it.
#   tpu/worker.sh status           whether a job runs, and the end of the log.
set -euo pipefail

code_dir="$HOME/big_transfer"
env_dir="$HOME/big_transfer_env"
python="${BIG_TRANSFER_PYTHON:-$env_dir/bin/python}"
run_dir="$HOME/big_transfer_run"
log="$run_dir/train.log"
pidfile="$run_dir/train.pid"

die() {
  echo "error on $(hostname): $*" >&2
  exit 1
}

# Prints the pid of the running training job; fails when there is none (a pid file left by a
# job that ended, or a pid the system gave to another program since, does not count).
running_pid() {
  local pid
  [[ -f "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ -r "/proc/$pid/cmdline" ]] && grep -q "big_transfer.main" "/proc/$pid/cmdline" || return 1
  echo "$pid"
}

cmd_setup() {
  local python_version=3.12 wheel="" staged uv pid
  for arg in "$@"; do
    case "$arg" in
      --python=*) python_version="${arg#--python=}" ;;
      --wheel=*) wheel="${arg#--wheel=}" ;;
      *) die "unknown setup option $arg" ;;
    esac
  done
  if pid=$(running_pid); then
    die "a job is running (pid $pid); stop it first (tpu/launch stop)"
  fi
  staged=$(cd "$(dirname "$0")/.." && pwd)
  if [[ "$staged" != "$code_dir" ]]; then
    rm -rf "$code_dir"
    mv "$staged" "$code_dir"
  fi
  if command -v uv >/dev/null; then
    uv=uv
  else
    # pip >= 23 refuses --user installs into a distribution's Python without the second flag.
    python3 -m pip install --user --quiet uv ||
      python3 -m pip install --user --quiet --break-system-packages uv
    uv="$HOME/.local/bin/uv"
  fi
  if [[ ! -x "$env_dir/bin/python" ]]; then
    "$uv" venv --python "$python_version" "$env_dir"
  fi
  if [[ -n "$wheel" ]]; then
    "$uv" pip install --python "$env_dir/bin/python" "big_transfer[tpu] @ file://$HOME/$wheel"
  else
    "$uv" pip install --python "$env_dir/bin/python" -e "${code_dir}[tpu]"
  fi
  echo "$(hostname): big_transfer $("$env_dir/bin/python" -c \
    'import big_transfer; print(big_transfer.__version__)') in $env_dir"
}

cmd_start() {
  local pid
  if pid=$(running_pid); then
    die "a job is already running (pid $pid); tpu/launch logs shows it, tpu/launch stop ends it"
  fi
  [[ -x "$python" ]] || die "no Python at $python; run tpu/launch setup first"
  mkdir -p "$run_dir"
  rm -f "$pidfile"
  cd "$code_dir"
  printf '\n=== %s %s: python -m big_transfer.main %s\n' "$(date -u +%FT%TZ)" "$(hostname)" \
    "$*" >>"$log"
  # setsid and nohup detach the job from the ssh session; the inner shell records its own pid,
  # which exec hands on to python, so the pid file names the training process itself.
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell.
  setsid nohup sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$python" -m big_transfer.main "$@" \
    >>"$log" 2>&1 </dev/null &
  for _ in $(seq 50); do
    [[ -s "$pidfile" ]] && break
    sleep 0.1
  done
  echo "$(hostname): started pid $(<"$pidfile"), logging to $log"
}

cmd_logs() {
  tail -n "${1:-100}" -F "$log"
}

cmd_stop() {
  local wait_s="${1:-600}" pid
  if ! pid=$(running_pid); then
    echo "$(hostname): no job running"
    return 0
  fi
  kill -TERM "$pid"
  echo "$(hostname): sent SIGTERM to pid $pid; waiting up to ${wait_s}s for its checkpoint"
  for ((waited = 0; waited < wait_s; waited++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$(hostname): stopped after ${waited}s"
      return 0
    fi
    sleep 1
  done
  die "pid $pid still runs after ${wait_s}s; it goes on saving in the background"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    echo "$(hostname): running, pid $pid"
  else
    echo "$(hostname): no job running"
  fi
  if [[ -f "$log" ]]; then
    tail -n 3 "$log"
  fi
}

command="${1:-}"
shift || true
case "$command" in
  setup | start | logs | stop | status) "cmd_$command" "$@" ;;
  *) die "usage: tpu/worker.sh setup|start|logs|stop|status [ARGS...]" ;;
esac
