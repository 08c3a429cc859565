#!/bin/sh
# The quick-start demo on the bundled defaults, from a fresh Debian 12 machine:
# installs what it needs, builds, scores the bundled language-aware model
# (models/tiny-gpt2-fortunes-lang) on the held-out language task, starts a local
# swarm of three swarmd nodes (deploy/local-swarm.sh) that fine-tune the four answer
# rows of its token embedding together, each on its own shard of the training data,
# shows their progress, waits until all three are done and hold the same updates,
# then prints the held-out loss and accuracy before and after beside the chance level
# and what backpropagation reaches, whether the three replicas agree (one digest),
# and stops the swarm.  Exit status 0 when they agree, non-zero otherwise.
#
#   sh deploy/demo.sh            the swarm of three (SW_DEMO_STEPS: steps per node, 500)
#   sh deploy/demo.sh --solo     one node alone (deploy/demo-solo.ini, 1000 steps)
# shellcheck source-path=SCRIPTDIR
set -eu
# the source tree: this script's directory's parent (through a symlink to it)
cd "$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")/.."
prog=demo
# shellcheck source=swarm-lib.sh
. deploy/swarm-lib.sh

mode=swarm
case "${1:-}" in
'') ;;
--solo) mode=solo ;;
-h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "demo: unknown option '$1' (--solo, --help)" >&2
    exit 2
    ;;
esac

t_begin=$(date +%s)
deploy/install-deps.sh run
if [ -f build-release/build.ninja ]; then
    meson setup --reconfigure build-release --buildtype=release -Dtests=false >/dev/null
else
    meson setup build-release --buildtype=release -Dtests=false >/dev/null
fi
ninja --quiet -C build-release
t_built=$(date +%s)

swarmctl=build-release/cli/swarmctl
swarmd=build-release/daemon/swarmd
model=models/tiny-gpt2-fortunes-lang
train_data=data/lang-train.jsonl
test_data=data/lang-test.jsonl
out=build-release/demo-model
# What backpropagation reaches on the same task from the same base: PyTorch AdamW on
# every parameter, 500 steps of batch 8, median of 3 seeds (the learning benchmark;
# docs/learning.md).
backprop_accuracy=0.930

# "loss" and "accuracy" (3 decimals) of `swarmctl model eval --json` output in $1
eval_field() {
    printf '%s\n' "$1" | sed -n "s/^ *\"$2\": *\([0-9.eE+-]*\),*$/\1/p" | awk '{ printf "%.3f", $1 }'
}

echo "== the bundled model"
$swarmctl model inspect "$model" | sed -n '1,12p'
echo
echo "== before: which language a message is in, on held-out data ($test_data)"
before=$($swarmctl model eval --model "$model" --data "$test_data" --json)
echo "loss $(eval_field "$before" loss) nats/token, accuracy $(eval_field "$before" accuracy)"
echo
# chance: the share of the most common answer (what always answering it scores)
chance=$(sed -n 's/.*"completion": *"\([^"]*\)".*/\1/p' "$test_data" | sort | uniq -c |
    awk '{ n += $1; if ($1 > m) m = $1 } END { printf "%.3f", m / n }')

# the before/after lines of the result, with chance and backpropagation beside them
result_lines() {
    echo "held-out loss on $test_data: $(eval_field "$before" loss) -> $(eval_field "$after" loss) nats/token"
    echo "held-out accuracy: $(eval_field "$before" accuracy) -> $(eval_field "$after" accuracy)" \
        "(chance $chance; backpropagation reaches $backprop_accuracy)"
}

if [ "$mode" = solo ]; then
    state=build-release/demo-state
    echo "== fine-tuning: one swarmd node, 1000 SPSA steps on $train_data"
    echo "   (config: deploy/demo-solo.ini; state: $state; Ctrl-C stops it cleanly)"
    rm -rf "$state"
    start=$(date +%s)
    $swarmd --config deploy/demo-solo.ini --until-done
    echo "   took $(($(date +%s) - start)) s"
    echo
    echo "== after: the node's model, exported to $out"
    $swarmctl model export --state-dir "$state" --out "$out" --force
    after=$($swarmctl model eval --model "$out" --data "$test_data" --json)
    echo
    echo "== result"
    result_lines
    exit 0
fi

dir=build-release/local-swarm
nodes=3
steps=${SW_DEMO_STEPS:-500}
swarm=deploy/local-swarm.sh

running=false
cleanup() {
    if $running; then
        running=false
        echo
        echo "== stopping the swarm"
        $swarm stop --dir "$dir" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== fine-tuning the answer rows: a swarm of $nodes swarmd nodes on this machine, $steps SPSA steps each,"
echo "   each on its own third of $train_data; every node applies every node's"
echo "   updates (state, configs and logs: $dir; Ctrl-C stops them cleanly)"
running=true
start=$(date +%s)
# only the rows of the answers' tokens (docs/learning.md: what this base can learn)
$swarm start "$nodes" --dir "$dir" --steps "$steps" --model "$model" --data "$train_data" \
    --lr 1e-3 --train trainable=^wte --train trainable_tokens=completions --fresh
echo
echo "== progress, every 5 s (STEP: the node's own steps; UPDATES: all it holds, its own and its peers')"
rc=0
$swarm wait --dir "$dir" --timeout 600 --progress 5 || rc=$?
t_trained=$(date +%s)
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || {
    echo "demo: the swarm did not finish (see the logs in $dir/node*/swarmd.log)" >&2
    exit "$rc"
}

# the three replicas' digests, from the nodes themselves
digests=""
k=0
while [ "$k" -lt "$nodes" ]; do
    js=$($swarmctl status --json --state-dir "$dir/node$k/state")
    digests="$digests $(printf '%s\n' "$js" | sed -n 's/.*"model":{"digest":"\([0-9a-f]*\)".*/\1/p')"
    k=$((k + 1))
done

echo
echo "== after: node0's model, exported to $out (the others hold the same weights)"
$swarmctl model export --state-dir "$dir/node0/state" --out "$out" --force | head -n 1
after=$($swarmctl model eval --model "$out" --data "$test_data" --json)
echo
echo "== a sample from the fine-tuned model (greedy)"
printf 'Impossible de trouver le fichier demandé\nLanguage:'
$swarmctl model generate --model "$out" --prompt "Impossible de trouver le fichier demandé
Language:" -n 2 --temperature 0

cleanup

echo
echo "== result"
result_lines
agree=true
# shellcheck disable=SC2086 # one digest per word
show_digests "$nodes" $digests || agree=false
if $agree; then
    echo "the $nodes replicas agree: one digest"
else
    echo "the $nodes replicas DISAGREE"
fi
echo "took $(($(date +%s) - t_begin)) s: build $((t_built - t_begin)) s, fine-tuning $((t_trained - start)) s"
$agree
