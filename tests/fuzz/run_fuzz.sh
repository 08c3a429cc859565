#!/bin/sh
# Runs one libFuzzer target with a writable corpus in the build tree, so that
# new inputs never land in the source tree: libFuzzer writes to the FIRST
# corpus directory and only reads the others (the checked-in seeds).
#
#   run_fuzz.sh FUZZER WORK_DIR SEED_DIR [libFuzzer options...]
#
# A libFuzzer dictionary SEED_DIR.dict (e.g. corpus/config.dict) is used if present.
# Crash reproducers go to WORK_DIR/artifacts/; rerun one with `FUZZER FILE`.
set -eu
fuzzer=$1
work=$2
seeds=$3
shift 3
mkdir -p "$work/corpus" "$work/artifacts"
if [ -d "$seeds" ]; then
    set -- "$@" "$work/corpus" "$seeds"
else
    echo "run_fuzz.sh: no seed directory $seeds, starting from an empty corpus" >&2
    set -- "$@" "$work/corpus"
fi
if [ -f "$seeds.dict" ]; then
    set -- -dict="$seeds.dict" "$@"
fi
exec "$fuzzer" -artifact_prefix="$work/artifacts/" "$@"
