#!/usr/bin/env bash
# Run `llvm-batch run --config JOB.toml [FLAGS...]` from cron: one run at a time, a dated log,
# llvm-batch's exit code passed on.
#
# Usage: llvm-batch-cron.sh JOB.toml [more `llvm-batch run` flags, which override the file]
#
# - Overlap: a tick that finds the previous run still going logs "skipped" and exits 0 at once
#   (flock -n), instead of queueing behind it: a queued run would only find the work done.
#   The lock is held by llvm-batch itself too, so it lasts as long as the run, even if this
#   wrapper is killed.
# - Resume: nothing to do. After a crash, kill or exit 3 (server unreachable past max-outage),
#   the next tick runs the same command, which resumes from the checkpoint; once the output
#   is finished, each tick prints `already_complete`, sends nothing and exits 0.
# - Logs: everything goes to $LLVM_BATCH_LOG_DIR/NAME-YYYY-MM-DD.log (NAME: the job file's
#   name without .toml). Nothing is printed unless the run fails, so cron mails only failures.
#
# Environment: LLVM_BATCH_BIN (default: llvm-batch on PATH; cron's PATH is short, so give the
# full path into the virtualenv), LLVM_BATCH_LOG_DIR (default:
# ${XDG_STATE_HOME:-$HOME/.local/state}/llvm-batch), LLVM_BATCH_LOCK (default: a lock file in
# the log directory, one per job file), plus llvm-batch's own (LLVM_BASE_URL, LLVM_API_KEY...).
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1" ]; then
    echo "usage: $(basename "$0") JOB.toml [llvm-batch run flags...]" >&2
    exit 2
fi
job=$(realpath "$1")
shift
name=$(basename "$job" .toml)
bin=${LLVM_BATCH_BIN:-llvm-batch}
log_dir=${LLVM_BATCH_LOG_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/llvm-batch}
mkdir -p "$log_dir"
log="$log_dir/$name-$(date +%F).log"
# Keyed on the job file's full path: two jobs that share a name never block each other.
lock=${LLVM_BATCH_LOCK:-$log_dir/.$name-$(printf '%s' "$job" | cksum | cut -d' ' -f1).lock}

note() { printf '%s llvm-batch-cron[%s]: %s\n' "$(date '+%F %T%z')" "$$" "$*" >>"$log"; }

exec 9>>"$lock"
if ! flock --nonblock 9; then
    note "skipped: the previous run of $job still holds $lock"
    exit 0
fi

note "start: $bin run --config $job $*"
status=0
# The outer redirection sends bash's own "Killed" notice to the log too.
{ "$bin" run --config "$job" "$@" >>"$log" 2>&1 || status=$?; } 2>>"$log"
note "exit $status"
if [ "$status" -ne 0 ]; then
    echo "llvm-batch-cron: $job exited $status; see $log" >&2
fi
exit "$status"
