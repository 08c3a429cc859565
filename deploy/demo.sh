#!/bin/sh
# The quick-start demo on the bundled defaults, from a fresh Debian 12 machine:
# installs what it needs, builds, evaluates the bundled model on the bundled
# held-out data and generates a sample.  (Fine-tuning arrives with swarmd's
# training engine; this script will then start a local swarm instead.)
set -eu
cd "$(dirname "$0")/.."

deploy/install-deps.sh run
if [ -f build-release/build.ninja ]; then
    meson setup --reconfigure build-release --buildtype=release -Dtests=false >/dev/null
else
    meson setup build-release --buildtype=release -Dtests=false >/dev/null
fi
ninja --quiet -C build-release

swarmctl=build-release/cli/swarmctl
model=models/tiny-gpt2-fortunes

echo "== the bundled model"
$swarmctl model inspect "$model" | sed -n '1,12p'
echo
echo "== held-out loss in its pretraining domain (data/base-val.jsonl)"
$swarmctl model eval --model "$model" --data data/base-val.jsonl
echo
echo "== the domain to adapt to (data/task-test.jsonl)"
$swarmctl model eval --model "$model" --data data/task-test.jsonl
echo
echo "== topic classification before fine-tuning (data/topic-test.jsonl)"
$swarmctl model eval --model "$model" --data data/topic-test.jsonl
echo
echo "== a sample (greedy)"
$swarmctl model generate --model "$model" --prompt "The secret of life is" -n 40 --temperature 0
echo
