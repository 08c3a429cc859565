#!/bin/sh
# The quick-start demo on the bundled defaults, from a fresh Debian 12 machine:
# installs what it needs, builds, scores the bundled model on held-out data,
# fine-tunes it with one swarmd node (deploy/demo-solo.ini), exports the result
# and scores it again.  (The next version starts a local swarm instead.)
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
swarmd=build-release/daemon/swarmd
model=models/tiny-gpt2-fortunes
state=build-release/demo-state
out=build-release/demo-model

echo "== the bundled model"
$swarmctl model inspect "$model" | sed -n '1,12p'
echo
echo "== before: topic classification on held-out data (data/topic-test.jsonl)"
$swarmctl model eval --model "$model" --data data/topic-test.jsonl
echo
echo "== fine-tuning: one swarmd node, 1000 SPSA steps on data/topic-train.jsonl"
echo "   (config: deploy/demo-solo.ini; state: $state; Ctrl-C stops it cleanly)"
rm -rf "$state"
start=$(date +%s)
$swarmd --config deploy/demo-solo.ini --until-done
echo "   took $(($(date +%s) - start)) s"
echo
echo "== after: the node's model, exported to $out"
$swarmctl model export --state-dir "$state" --out "$out" --force
$swarmctl model eval --model "$out" --data data/topic-test.jsonl
echo
echo "== a sample from the fine-tuned model (greedy)"
$swarmctl model generate --model "$out" --prompt "I love to eat pizza with my friends.
Topic:" -n 3 --temperature 0
