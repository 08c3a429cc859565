# shellcheck shell=sh disable=SC2154,SC2034 # globals shared with the caller
# What deploy/local-swarm.sh, deploy/netns-swarm.sh and deploy/demo.sh share: sourced
# by them (`. "$here/swarm-lib.sh"`), not run.  It only defines functions.  They read
# the caller's globals:
#   prog      the script's name in messages (local-swarm, netns-swarm, demo)
#   dir       the swarm's directory (local-swarm.sh's layout: local-swarm.env,
#             nodeK/swarmd.ini, nodeK/state/, nodeK/swarmd.log, nodeK/swarmd.pid)
#   swarmd, swarmctl   the binaries (set by find_binaries)
#   n         the number of nodes
# and where a function says so, model, steps and lr.

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage_error() {
    echo "$prog: $*" >&2
    echo "(see deploy/$prog.sh --help)" >&2
    exit 2
}

is_uint() {
    case "$1" in
    '' | *[!0-9]*) return 1 ;;
    *) return 0 ;;
    esac
}

# Absolute path of directory $1 (which must exist), resolved against the working directory.
abspath() {
    (cd "$1" 2>/dev/null && pwd) || die "$1: no such directory"
}

# INI values are written in double quotes (inih-style quotes are removed by swarmd), so
# a path may hold spaces but not a double quote or a newline.
check_ini_path() {
    case "$1" in
    *'"'* | *'
'*) die "$1: a path with a double quote or a newline cannot be written to an INI file" ;;
    esac
}

env_get() { # key -> value recorded by `start`
    sed -n "s/^$1=//p" "$dir/local-swarm.env" | head -n 1
}

# Writes $dir/local-swarm.env: the KEY=VALUE arguments, one a line.
write_env() {
    {
        echo "# written by deploy/$prog.sh start; read by status, wait and stop"
        printf '%s\n' "$@"
    } >"$dir/local-swarm.env"
}

# Parses `start N [options]`: sets n (1..32), fresh (--fresh), and dir, steps, bin and
# lr from --dir, --steps, --bin and --lr (the caller sets their defaults first).  The
# further options with a value that the caller lists in start_opts (e.g. "--model
# --data") go to its function start_opt NAME VALUE.
parse_start() {
    [ $# -ge 1 ] || usage_error "start: the number of nodes is missing"
    n=$1
    shift
    if ! is_uint "$n" || [ "$n" -lt 1 ] || [ "$n" -gt 32 ]; then
        usage_error "start: N must be 1..32, not '$n'"
    fi
    fresh=false
    train_extra=""
    while [ $# -gt 0 ]; do
        case "$1" in
        --fresh)
            fresh=true
            shift
            continue
            ;;
        --dir | --steps | --bin | --lr | --train) ;;
        *)
            case " $start_opts " in
            *" $1 "*) ;;
            *) usage_error "start: unknown option '$1'" ;;
            esac
            ;;
        esac
        [ $# -ge 2 ] || usage_error "start: $1 needs a value"
        case "$1" in
        --dir) dir=$2 ;;
        --steps) steps=$2 ;;
        --bin) bin=$2 ;;
        --lr) lr=$2 ;;
        --train)
            # KEY=VALUE, one more [train] key of the founder (the others adopt the run spec)
            case "$2" in
            [a-z]*=*) ;;
            *) usage_error "start: --train takes KEY=VALUE, not '$2'" ;;
            esac
            key=${2%%=*}
            case "$key" in *[!a-z_]*) usage_error "start: --train: '$key' is not a key name" ;; esac
            train_extra="$train_extra$key = ${2#*=}
"
            ;;
        *) start_opt "$1" "$2" ;;
        esac
        shift 2
    done
}

# Sets swarmd and swarmctl to the binaries of build directory $1 (absolute), or dies.
find_binaries() {
    swarmd="$1/daemon/swarmd"
    swarmctl="$1/cli/swarmctl"
    for b in "$swarmd" "$swarmctl"; do
        [ -x "$b" ] || die "$b: not built (build with: meson setup $1 --buildtype=release && ninja -C $1; or pass --bin BUILD_DIR)"
    done
}

# The pid of node $1 if its swarmd runs (the recorded pid is alive and runs that
# node's configuration), else nothing.
node_pid() {
    pidf="$dir/node$1/swarmd.pid"
    [ -f "$pidf" ] || return 0
    p=$(cat "$pidf" 2>/dev/null || true)
    is_uint "$p" || return 0
    kill -0 "$p" 2>/dev/null || return 0
    if [ -r "/proc/$p/cmdline" ]; then
        # guards against a reused pid: it must be swarmd with this node's config
        tr '\0' '\n' <"/proc/$p/cmdline" | grep -qxF "$dir/node$1/swarmd.ini" || return 0
    fi
    echo "$p"
}

log_tail() { # node, lines
    if [ -f "$dir/node$1/swarmd.log" ]; then
        echo "---- last lines of $dir/node$1/swarmd.log:" >&2
        tail -n "$2" "$dir/node$1/swarmd.log" >&2
        echo "----" >&2
    fi
}

# Dies if any of nodes 0..$1-1 of $dir runs.
refuse_running() {
    rk=0
    while [ "$rk" -lt "$1" ]; do
        p=$(node_pid "$rk")
        [ -z "$p" ] || die "$dir: node$rk is running (pid $p): stop the swarm first (deploy/$prog.sh stop --dir $dir)"
        rk=$((rk + 1))
    done
}

# Deletes nodes 0..$1-1 of $dir (configs, state, logs, shards) and local-swarm.env.
delete_nodes() {
    rk=0
    while [ "$rk" -lt "$1" ]; do
        rm -rf "$dir/node$rk" "$dir/shard$rk.jsonl"
        rk=$((rk + 1))
    done
    rm -f "$dir/local-swarm.env"
}

# Splits JSONL file $1 into $2 shards $dir/shardK.jsonl: record i (blank lines
# skipped) goes to shard i % $2; dies if a shard is empty.
write_shards() {
    awk -v n="$2" -v dir="$dir" 'NF { print > (dir "/shard" (i++ % n) ".jsonl") }' "$1"
    rk=0
    while [ "$rk" -lt "$2" ]; do
        [ -s "$dir/shard$rk.jsonl" ] || die "$1: too few records for $2 shards (shard $rk is empty)"
        rk=$((rk + 1))
    done
}

# Writes $dir/nodeK/swarmd.ini.  Arguments: node K, listen URL, sync URL, bootstrap URL
# (empty for the founder, node 0, whose [train] keys make the run spec: steps and lr),
# seed, and the comment lines that open it (without their "# ").  Reads model.
write_config() {
    wk=$1
    cfg="$dir/node$wk/swarmd.ini"
    {
        printf '%s\n' "$6" | sed 's/^/# /'
        echo "# Every key: docs/configuration.md."
        echo "[node]"
        echo "state_dir = \"$dir/node$wk/state\""
        echo "listen = $2"
        echo "sync = $3"
        [ -z "$4" ] || echo "bootstrap = $4"
        echo "progress_ms = 3000"
        echo "checkpoint_every = 100"
        echo "batch_max_ms = 500"
        echo
        echo "[model]"
        echo "path = \"$model\""
        echo
        echo "[data]"
        echo "train = \"$dir/shard$wk.jsonl\""
        echo
        echo "[train]"
        if [ "$wk" -eq 0 ]; then
            echo "max_steps = $steps"
            echo "lr = $lr"
            echo "eps = 1e-3"
            printf '%s' "${train_extra:-}"
        fi
        echo "batch_size = 8"
        echo "seq_len = 128"
        echo "seed = $5"
        echo "threads = 1"
    } >"$cfg.tmp"
    mv "$cfg.tmp" "$cfg"
}

# Starts node $1's swarmd in the background, in network namespace $2 if given, and
# records its pid.  In a session of its own (setsid), so that a Ctrl-C meant for the
# terminal's job does not reach the nodes too: `stop` sends each one SIGTERM, once (a
# second signal would make it exit at once, without its final checkpoint).  ip netns
# exec and setsid exec in place here (a background job of a script leads no process
# group), so $! is swarmd's pid; node_pid checks that.
start_node() {
    sk=$1
    cfg="$dir/node$sk/swarmd.ini"
    log="$dir/node$sk/swarmd.log"
    echo "### $(date -u +%Y-%m-%dT%H:%M:%SZ) $prog.sh: ${2:+ip netns exec $2 }$swarmd --config $cfg" >>"$log"
    if [ -n "${2:-}" ]; then
        ip netns exec "$2" setsid "$swarmd" --config "$cfg" </dev/null >>"$log" 2>&1 &
    elif command -v setsid >/dev/null 2>&1; then
        setsid "$swarmd" --config "$cfg" </dev/null >>"$log" 2>&1 &
    else
        "$swarmd" --config "$cfg" </dev/null >>"$log" 2>&1 &
    fi
    echo $! >"$dir/node$sk/swarmd.pid"
}

# Starts node 0 and waits until it answers, then nodes 1..n-1, which join through it,
# and waits until each answers.  $1: the namespace prefix (node K runs in $1-K), empty
# for none; $2: what the joiners join through; $3: node 0's figures, for the log.
start_nodes() {
    echo "$prog: starting node0${1:+ in $1-0} (founds the swarm; $3)"
    start_node 0 "${1:+$1-0}"
    wait_answer 0 120
    nk=1
    while [ "$nk" -lt "$n" ]; do
        echo "$prog: starting node$nk${1:+ in $1-$nk} (joins through $2)"
        start_node "$nk" "${1:+$1-$nk}"
        nk=$((nk + 1))
    done
    nk=1
    while [ "$nk" -lt "$n" ]; do
        wait_answer "$nk" 120
        nk=$((nk + 1))
    done
}

# Waits (at most $2 s) until node $1 answers `swarmctl status`; dies if it exits.
wait_answer() {
    ak=$1
    t_end=$(($(date +%s) + $2))
    while :; do
        if "$swarmctl" status --state-dir "$dir/node$ak/state" --timeout-ms 2000 >/dev/null 2>&1; then
            return 0
        fi
        if [ -z "$(node_pid "$ak")" ]; then
            log_tail "$ak" 15
            die "node$ak: swarmd exited during startup (log: $dir/node$ak/swarmd.log)"
        fi
        [ "$(date +%s)" -lt "$t_end" ] || {
            log_tail "$ak" 15
            die "node$ak: no answer on $dir/node$ak/state/control.sock after $2 s (log: $dir/node$ak/swarmd.log)"
        }
        sleep 0.3
    done
}

# show_digests N D...: prints "nodeK digest D" for each digest (node 0 first); returns
# 0 when there are N and they are one digest (then in $first), else 1.
show_digests() {
    want=$1
    shift
    first=""
    same=true
    dk=0
    for d in "$@"; do
        echo "node$dk digest $d"
        [ -n "$first" ] || first=$d
        [ "$d" = "$first" ] || same=false
        dk=$((dk + 1))
    done
    [ "$dk" -eq "$want" ] && $same
}
