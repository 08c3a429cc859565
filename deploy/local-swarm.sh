#!/bin/sh
# A swarm of N swarmd nodes on this machine, on loopback: each node has its own
# state directory, log, ports and shard of the training data (record i of the data
# goes to shard i % N).  Node 0 founds the swarm (its configuration makes the run
# spec); the others join through node 0's sync address and adopt it.
#
#   deploy/local-swarm.sh start N [--dir DIR] [--steps S] [--bin BUILD_DIR]
#                                 [--lr LR] [--model DIR] [--data FILE] [--train K=V]... [--fresh]
#   deploy/local-swarm.sh status [--dir DIR]
#   deploy/local-swarm.sh wait   [--dir DIR] [--timeout S] [--progress S]
#   deploy/local-swarm.sh stop   [--dir DIR] [--timeout S]
#
# Layout of DIR (default build-release/local-swarm):
#   local-swarm.env          what `start` chose (nodes, build dir, steps), read by the others
#   shardK.jsonl             node K's training data
#   nodeK/swarmd.ini         node K's configuration (absolute paths; run it by hand if you like)
#   nodeK/state/             its state directory (control socket: nodeK/state/control.sock)
#   nodeK/swarmd.log         its log;  nodeK/swarmd.pid: its process id while it runs
#
# The nodes are started without --until-done: once they reach max_steps they stay up
# in state "done", serving and syncing, until `stop` sends them SIGTERM.
# shellcheck source-path=SCRIPTDIR
set -eu

prog=local-swarm
# this script's directory (through a symlink to it): the source tree is its parent
here=$(cd "$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=swarm-lib.sh
. "$here/swarm-lib.sh"

usage() {
    cat <<EOF
usage: deploy/local-swarm.sh start N [--dir DIR] [--steps S] [--bin BUILD_DIR]
                                     [--lr LR] [--model DIR] [--data FILE] [--train K=V]...
                                     [--fresh]
       deploy/local-swarm.sh status [--dir DIR]
       deploy/local-swarm.sh wait   [--dir DIR] [--timeout S] [--progress S]
       deploy/local-swarm.sh stop   [--dir DIR] [--timeout S]

start   starts N swarmd nodes (1..32) on 127.0.0.1, each training S steps (default 300)
        on its own shard of --data (default data/topic-train.jsonl) from --model
        (default models/tiny-gpt2-fortunes) at learning rate --lr (default 3e-4), with
        the binaries of BUILD_DIR (default build-release); each --train KEY=VALUE adds
        a [train] key to node 0's config (the others adopt the run spec it founds,
        docs/configuration.md).  A DIR that holds a stopped
        swarm is started again where it left off; --fresh deletes its nodes first.
status  one line per node: pid, state, step, loss, peers alive, updates, digest.
wait    waits until every node is done and all report one version vector and the
        digest for it (default timeout 600 s; --progress S prints status every S s),
        then prints the digests and whether they agree.
stop    sends SIGTERM to every node and waits for them to exit (default 60 s; after
        that they are killed with SIGKILL, which loses nothing: see docs/swarmd.md).

DIR defaults to build-release/local-swarm (in the source tree).
Exit status: 0 success; 1 failure (a node failed, a timeout); 2 usage error;
3 (wait) the replicas disagree.
EOF
}

abspath_file() {
    [ -f "$1" ] || die "$1: no such file"
    printf '%s/%s\n' "$(abspath "$(dirname "$1")")" "$(basename "$1")"
}

load_env() {
    [ -f "$dir/local-swarm.env" ] ||
        die "$dir: no local swarm here (no local-swarm.env); start one with: deploy/local-swarm.sh start N --dir $dir"
    n=$(env_get n)
    bin=$(env_get bin)
    is_uint "$n" || die "$dir/local-swarm.env: bad node count '$n'"
    swarmctl="$bin/cli/swarmctl"
    [ -x "$swarmctl" ] || die "$swarmctl: not found or not executable (was $bin rebuilt or removed?)"
}

# Ports for the nodes: 2 per node, in 20000..32767 (below Linux's ephemeral range, so
# ports the kernel hands out for port-0 binds and outgoing connections never clash),
# none of them in use by any TCP socket right now.
used_ports() {
    if command -v ss >/dev/null 2>&1; then
        ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }'
    else
        for f in /proc/net/tcp /proc/net/tcp6; do
            [ -r "$f" ] || continue
            awk 'NR > 1 { split($2, a, ":"); print a[2] }' "$f" | while read -r hex; do
                printf '%d\n' "0x$hex"
            done
        done
    fi
}

pick_ports() { # count -> ports, one per line
    used=$(used_ports | sort -u)
    want=$1
    port=$((20000 + ($$ * 37) % 12000))
    tries=0
    while [ "$want" -gt 0 ]; do
        tries=$((tries + 1))
        [ "$tries" -le 12768 ] || die "no free TCP ports in 20000..32767"
        port=$((port + 1))
        [ "$port" -le 32767 ] || port=20000
        if ! printf '%s\n' "$used" | grep -qx "$port"; then
            echo "$port"
            want=$((want - 1))
        fi
    done
}

# The value of `key:value` in swarmctl's human status output ($2).
status_field() {
    printf '%s\n' "$2" | sed -n "s/^$1://p" | head -n 1
}

# ---- start ----------------------------------------------------------------------------

abort_start() {
    bk=0
    while [ "$bk" -lt "$n" ]; do
        bp=$(node_pid "$bk")
        if [ -n "$bp" ]; then
            kill -TERM "$bp" 2>/dev/null || true
            echo "$prog: start failed: sent SIGTERM to node$bk (pid $bp)" >&2
        fi
        bk=$((bk + 1))
    done
}

start_opts="--model --data"
start_opt() {
    case "$1" in
    --model) model=$2 ;;
    --data) data=$2 ;;
    esac
}

cmd_start() {
    steps=""
    bin=""
    lr=3e-4
    model="$root/models/tiny-gpt2-fortunes"
    data="$root/data/topic-train.jsonl"
    parse_start "$@"
    if [ -n "$steps" ]; then
        if ! is_uint "$steps" || [ "$steps" -lt 1 ]; then
            usage_error "start: --steps must be a positive integer, not '$steps'"
        fi
    fi
    model=$(abspath "$model")
    data=$(abspath_file "$data")
    [ -f "$model/config.json" ] || die "$model: not a model directory (no config.json)"
    mkdir -p "$dir"
    dir=$(abspath "$dir")
    # a swarm started again keeps its build directory unless --bin says otherwise
    [ -n "$bin" ] || [ ! -f "$dir/local-swarm.env" ] || $fresh || bin=$(env_get bin)
    [ -n "$bin" ] || bin="$root/build-release"
    bin=$(abspath "$bin")
    find_binaries "$bin"
    for p in "$dir" "$model" "$data"; do check_ini_path "$p"; done

    if [ -f "$dir/local-swarm.env" ]; then
        [ -z "$(env_get netns_prefix)" ] ||
            die "$dir holds a swarm of deploy/netns-swarm.sh: start it with that script"
        old_n=$(env_get n)
        refuse_running "$old_n"
        if $fresh; then
            delete_nodes "$old_n"
        else
            [ "$old_n" -eq "$n" ] ||
                die "$dir holds a swarm of $old_n nodes, not $n: start it with N=$old_n, or pass --fresh to delete it"
            old_steps=$(env_get steps)
            [ -z "$steps" ] || [ "$steps" = "$old_steps" ] ||
                die "$dir holds a run of $old_steps steps per node (a run's max_steps cannot change): pass --fresh to delete it"
            steps=$old_steps
            {
                grep -v '^bin=' "$dir/local-swarm.env"
                echo "bin=$bin"
            } >"$dir/local-swarm.env.tmp"
            mv "$dir/local-swarm.env.tmp" "$dir/local-swarm.env"
            echo "$prog: $dir holds a stopped swarm of $n nodes: starting it again (it resumes; --fresh starts over)"
        fi
    fi
    resume=false
    [ -f "$dir/local-swarm.env" ] && resume=true
    [ -n "$steps" ] || steps=300

    if ! $resume; then
        write_shards "$data" "$n"
        ports=$(pick_ports $((2 * n)))
        sync0=""
        k=0
        for port in $ports; do
            if [ $((k % 2)) -eq 0 ]; then
                pub=$port
            else
                node=$((k / 2))
                mkdir -p "$dir/node$node"
                if [ "$node" -eq 0 ]; then
                    role="It founds the swarm: its [train] keys make the run spec."
                else
                    role="It joins through node 0's sync address and adopts the swarm's run spec."
                fi
                # seeds 2, 4, 6, ...: as this script has always given them
                write_config "$node" "tcp://127.0.0.1:$pub" "tcp://127.0.0.1:$port" "$sync0" \
                    $((2 * node + 2)) "Node $node of a local swarm, written by deploy/local-swarm.sh start.
$role"
                [ -n "$sync0" ] || sync0="tcp://127.0.0.1:$port"
            fi
            k=$((k + 1))
        done
        write_env "n=$n" "bin=$bin" "steps=$steps" "lr=$lr" "model=$model" "data=$data"
    fi

    # a start that fails half-way (a node that does not come up, Ctrl-C) ends the nodes
    # it started rather than leave them running unattended
    trap '[ "$?" -eq 0 ] || abort_start' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    records=$(wc -l <"$dir/shard0.jsonl")
    start_nodes "" node0 "$steps steps per node, $records records in its shard"

    trap - EXIT INT TERM
    rel=$dir
    case "$dir" in "$PWD"/*) rel=${dir#"$PWD"/} ;; esac
    ctl=$swarmctl
    case "$swarmctl" in "$PWD"/*) ctl=${swarmctl#"$PWD"/} ;; esac
    me="deploy/local-swarm.sh"
    [ "$(cd "$root" && pwd)" = "$PWD" ] || me="$root/deploy/local-swarm.sh"
    dopt=""
    [ "$dir" = "$root/build-release/local-swarm" ] || dopt=" --dir $rel"
    echo "$prog: $n nodes running in $rel:"
    cmd_status_table
    echo
    echo "Watch them:"
    echo "  $me status$dopt               # one line per node"
    echo "  $ctl status --state-dir $rel/node0/state     # one node in full (peers, digest, net)"
    if "$swarmctl" status --help 2>/dev/null | grep -q -- '--watch'; then
        echo "  $ctl status --watch --state-dir $rel/node0/state"
    else
        echo "  watch -n 2 $ctl status --state-dir $rel/node0/state"
    fi
    echo "  tail -f $rel/node0/swarmd.log"
    echo "  $me wait$dopt                 # until all are done and agree"
    echo "  $me stop$dopt"
}

# ---- status ---------------------------------------------------------------------------

cmd_status_table() {
    printf '%-6s %-8s %-9s %-11s %-7s %-5s %-8s %s\n' NODE PID STATE STEP LOSS PEERS UPDATES DIGEST
    k=0
    while [ "$k" -lt "$n" ]; do
        p=$(node_pid "$k")
        if [ -z "$p" ]; then
            printf '%-6s %-8s %s\n' "node$k" - "not running (log: $dir/node$k/swarmd.log)"
        elif ! out=$("$swarmctl" status --state-dir "$dir/node$k/state" --timeout-ms 3000 2>&1); then
            printf '%-6s %-8s %s\n' "node$k" "$p" "no answer: $(printf '%s' "$out" | head -n 1)"
        else
            alive=$(printf '%s\n' "$out" | awk '/^# Peers/ { t = 1; next } t && $2 == "alive" { a++ } END { print a + 0 }')
            printf '%-6s %-8s %-9s %-11s %-7s %-5s %-8s %s\n' "node$k" "$p" \
                "$(status_field state "$out")" "$(status_field step "$out")" \
                "$(status_field loss "$out")" "$alive" "$(status_field updates "$out")" \
                "$(status_field digest "$out")"
        fi
        k=$((k + 1))
    done
}

parse_dir_opts() { # accepted options: the rest of "$@" after the verb; sets dir, timeout, progress
    while [ $# -gt 0 ]; do
        case "$1" in
        --dir | --timeout | --progress)
            [ $# -ge 2 ] || usage_error "$verb: $1 needs a value"
            case "$1:$verb" in
            --dir:*) dir=$2 ;;
            --timeout:wait | --timeout:stop) timeout=$2 ;;
            --progress:wait) progress=$2 ;;
            *) usage_error "$verb: unknown option '$1'" ;;
            esac
            shift 2
            ;;
        *) usage_error "$verb: unknown option '$1'" ;;
        esac
    done
    is_uint "$timeout" || usage_error "$verb: --timeout must be a number of seconds, not '$timeout'"
    is_uint "$progress" || usage_error "$verb: --progress must be a number of seconds, not '$progress'"
    [ -d "$dir" ] || die "$dir: no such directory: no local swarm there"
    dir=$(abspath "$dir")
}

cmd_status() {
    parse_dir_opts "$@"
    load_env
    cmd_status_table
}

# ---- wait -----------------------------------------------------------------------------

# Fields of swarmctl's one-line status JSON (docs/cli.md; its objects nest at most two
# deep): json_obj KEY JSON prints the top-level object KEY without its braces,
# json_field KEY OBJ the value of KEY in such an object (a string's quotes removed).
json_obj() {
    printf '%s\n' "$2" | sed -nE "s/.*\"$1\":\\{(([^{}]|\\{[^{}]*\\})*)\\}.*/\\1/p"
}

json_field() {
    printf '%s\n' "$2" | sed -nE "s/(^|.*,)\"$1\":(\"[^\"]*\"|\\{[^{}]*\\}|[^,{}]*).*/\\2/p" | tr -d '"'
}

# A version vector {id:n,...} as sorted id:n lines joined by spaces (key order free).
norm_vv() {
    printf '%s\n' "$1" | tr -d '{}' | tr ',' '\n' | grep : | sort | tr '\n' ' '
}

cmd_wait() {
    parse_dir_opts "$@"
    load_env
    t0=$(date +%s)
    t_end=$((t0 + timeout))
    next_progress=$((t0 + progress))
    while :; do
        ready=true
        digests=""
        vv0=""
        k=0
        while [ "$k" -lt "$n" ]; do
            if [ -z "$(node_pid "$k")" ]; then
                log_tail "$k" 15
                die "node$k is not running (log: $dir/node$k/swarmd.log)"
            fi
            js=$("$swarmctl" status --json --state-dir "$dir/node$k/state" --timeout-ms 5000 2>/dev/null) || js=""
            mo=$(json_obj model "$js")
            state=$(json_field state "$(json_obj node "$js")")
            vv=$(norm_vv "$(json_field version_vector "$mo")")
            dvv=$(norm_vv "$(json_field digest_version_vector "$mo")")
            digest=$(json_field digest "$mo")
            held=$(json_field updates "$(json_obj ledger "$js")")
            sum=$(printf '%s\n' "$vv" | tr ' ' '\n' | awk -F: '{ s += $2 } END { print s + 0 }')
            [ "$state" = "done" ] || ready=false
            [ -n "$vv" ] && [ "$dvv" = "$vv" ] || ready=false
            # no update held beyond the contiguous prefixes the vector counts
            [ "$held" = "$sum" ] || ready=false
            case "$digest" in '' | null) ready=false ;; esac
            [ -n "$vv0" ] || vv0=$vv
            [ "$vv" = "$vv0" ] || ready=false
            digests="$digests $digest"
            k=$((k + 1))
        done
        $ready && break
        now=$(date +%s)
        if [ "$now" -ge "$t_end" ]; then
            echo "$prog: not every node is done with one version vector after $timeout s:" >&2
            cmd_status_table >&2
            exit 1
        fi
        if [ "$progress" -gt 0 ] && [ "$now" -ge "$next_progress" ]; then
            echo "-- $((now - t0)) s"
            cmd_status_table
            next_progress=$((now + progress))
        fi
        sleep 0.5
    done

    updates=$(printf '%s\n' "$vv0" | tr ' ' '\n' | awk -F: '{ s += $2 } END { print s + 0 }')
    origins=$(printf '%s\n' "$vv0" | tr ' ' '\n' | grep -c :)
    echo "$prog: all $n nodes are done and hold the same $updates updates ($origins origins) after $(($(date +%s) - t0)) s"
    # shellcheck disable=SC2086 # one digest per word
    if show_digests "$n" $digests; then
        echo "agreement: the $n replicas agree (digest $first)"
    else
        echo "agreement: the $n replicas DISAGREE: one version vector, different digests (see docs/engine.md, Saturation)"
        exit 3
    fi
}

# ---- stop -----------------------------------------------------------------------------

cmd_stop() {
    parse_dir_opts "$@"
    load_env
    pids=""
    k=0
    while [ "$k" -lt "$n" ]; do
        p=$(node_pid "$k")
        if [ -n "$p" ]; then
            kill -TERM "$p" 2>/dev/null || true
            pids="$pids $k:$p"
        fi
        k=$((k + 1))
    done
    if [ -z "$pids" ]; then
        echo "$prog: no node is running in $dir"
        return 0
    fi
    echo "$prog: sent SIGTERM to$(for kp in $pids; do printf ' node%s (pid %s)' "${kp%%:*}" "${kp#*:}"; done)"
    echo "$prog: (a node still training waits up to 10 s for its peers to confirm its last updates)"
    t_end=$(($(date +%s) + timeout))
    while :; do
        left=""
        for kp in $pids; do
            [ -z "$(node_pid "${kp%%:*}")" ] || left="$left $kp"
        done
        [ -n "$left" ] || break
        if [ "$(date +%s)" -ge "$t_end" ]; then
            for kp in $left; do
                kill -KILL "${kp#*:}" 2>/dev/null || true
                echo "$prog: node${kp%%:*} (pid ${kp#*:}) did not exit within $timeout s: killed with SIGKILL (its ledger keeps every update; a restart resumes)" >&2
            done
            status=1
            break
        fi
        sleep 0.2
    done
    for kp in $pids; do
        k=${kp%%:*}
        rm -f "$dir/node$k/swarmd.pid"
        # the stopped line of this start (a start's lines follow its ### line)
        line=$(awk '/^### / { l = "" } /msg=stopped/ { l = $0 } END { print l }' "$dir/node$k/swarmd.log" 2>/dev/null || true)
        ex=$(printf '%s\n' "$line" | sed -n 's/.* exit=\([0-9]*\).*/\1/p')
        echo "node$k: stopped${ex:+ (exit=$ex)}"
        [ -z "$ex" ] || [ "$ex" -eq 0 ] || status=1
    done
    return "$status"
}

# ---- main -----------------------------------------------------------------------------

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
verb=$1
shift
dir="$root/build-release/local-swarm"
timeout=600
progress=0
status=0
case "$verb" in
-h | --help | help) usage ;;
start) cmd_start "$@" ;;
status) cmd_status "$@" ;;
wait) cmd_wait "$@" ;;
stop)
    timeout=60
    cmd_stop "$@"
    ;;
*) usage_error "unknown command '$verb' (start, status, wait, stop)" ;;
esac
