#!/bin/sh
# N swarmd nodes as separate hosts on one machine: each node runs in a network
# namespace of its own (PREFIX-0, PREFIX-1, ...) with one interface, eth0, addressed
# 10.77.0.(K+1)/24, whose veth peer is a port of a bridge in a further namespace,
# PREFIX-hub (so nothing is added to the machine's own network stack, and several
# such swarms can run side by side under different prefixes).  Each eth0 gets a netem
# qdisc, `delay D loss L%`, on what it sends: between two nodes a message is delayed
# D ms each way and a packet lost with probability about 2L%.  What crosses this
# network is real TCP between real network stacks, so it tests what a LAN or WAN would.
#
#   deploy/netns-swarm.sh start N [--dir DIR] [--steps S] [--bin BUILD_DIR] [--lr LR]
#                                 [--train K=V]...
#                                 [--delay-ms D] [--loss-pct L] [--prefix P] [--fresh]
#   deploy/netns-swarm.sh status [--dir DIR]
#   deploy/netns-swarm.sh wait   [--dir DIR] [--timeout S] [--progress S]
#   deploy/netns-swarm.sh stop   [--dir DIR] [--prefix P]
#
# It needs root (namespaces, links, qdiscs) and a kernel with network namespaces,
# veth, bridge and, for a nonzero delay or loss, the netem qdisc (sch_netem).  DIR has
# deploy/local-swarm.sh's layout (nodeK/swarmd.ini, state/, swarmd.log, swarmd.pid,
# shardK.jsonl), so status and wait are local-swarm.sh's: the control sockets are
# files, reachable from any namespace.  Node 0 founds the swarm; the others join
# through its sync address, tcp://10.77.0.1:7702.
# shellcheck source-path=SCRIPTDIR
set -eu

prog=netns-swarm
# this script's directory (through a symlink to it): the source tree is its parent
here=$(cd "$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=swarm-lib.sh
. "$here/swarm-lib.sh"
local_swarm="$root/deploy/local-swarm.sh"

usage() {
    cat <<EOF
usage: deploy/netns-swarm.sh start N [--dir DIR] [--steps S] [--bin BUILD_DIR] [--lr LR]
                                     [--train K=V]...   (as local-swarm.sh)
                                     [--delay-ms D] [--loss-pct L] [--prefix P] [--fresh]
       deploy/netns-swarm.sh status [--dir DIR]
       deploy/netns-swarm.sh wait   [--dir DIR] [--timeout S] [--progress S]
       deploy/netns-swarm.sh stop   [--dir DIR] [--prefix P]

start   creates namespaces P-0 .. P-(N-1) (N: 1..32) and P-hub (P: --prefix, default
        swt), a bridge, and a veth pair per node with netem delay D ms (default 20) and
        loss L% (default 1) on each node's side, then starts a swarmd in each namespace
        (S steps each, default 300, on its own shard of data/topic-train.jsonl, with
        BUILD_DIR's binaries, default build-release).  --delay-ms 0 --loss-pct 0: no
        netem.  --fresh deletes what a previous run left in DIR.
status  the nodes (as deploy/local-swarm.sh status) and each node's netem qdisc.
wait    as deploy/local-swarm.sh wait: until all are done and agree.
stop    stops the nodes (SIGTERM, bounded wait), then deletes the namespaces, which
        takes the veth pairs and the bridge with them.

DIR defaults to build-release/netns-swarm (in the source tree).  Needs root.
Exit status: 0 success; 1 failure; 2 usage error; 3 (wait) the replicas disagree.
EOF
}

need_root() {
    [ "$(id -u)" -eq 0 ] ||
        die "needs root: it creates network namespaces, veth pairs, a bridge and qdiscs (run it with sudo)"
    command -v ip >/dev/null 2>&1 || die "needs iproute2's ip (apt-get install iproute2)"
}

ns_exists() {
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qxF "$1"
}

# Deletes the namespaces of prefix $1 for nodes 0..$2-1 and the hub, ending any
# process still inside them first (only ever ours: the namespaces are this script's).
teardown() {
    tp=$1
    tn=$2
    deleted=""
    tk=0
    while [ "$tk" -le "$tn" ]; do
        if [ "$tk" -eq "$tn" ]; then ns="$tp-hub"; else ns="$tp-$tk"; fi
        tk=$((tk + 1))
        ns_exists "$ns" || continue
        left=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$left" ]; then
            # shellcheck disable=SC2086 # one pid per word
            kill -TERM $left 2>/dev/null || true
            tw=0
            while [ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] && [ "$tw" -lt 50 ]; do
                sleep 0.2
                tw=$((tw + 1))
            done
            left=$(ip netns pids "$ns" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
        fi
        ip netns del "$ns" || echo "$prog: could not delete network namespace $ns" >&2
        deleted="$deleted $ns"
    done
    [ -z "$deleted" ] || echo "$prog: deleted network namespaces:$deleted"
}

# ---- start ----------------------------------------------------------------------------

start_opts="--delay-ms --loss-pct --prefix"
start_opt() {
    case "$1" in
    --delay-ms) delay=$2 ;;
    --loss-pct) loss=$2 ;;
    --prefix) prefix=$2 ;;
    esac
}

cmd_start() {
    steps=300
    bin="$root/build-release"
    lr=3e-4
    delay=20
    loss=1
    parse_start "$@"
    if ! is_uint "$steps" || [ "$steps" -lt 1 ]; then
        usage_error "start: --steps must be a positive integer, not '$steps'"
    fi
    is_uint "$delay" || usage_error "start: --delay-ms must be a whole number of milliseconds, not '$delay'"
    case "$loss" in
    '' | *[!0-9.]* | *.*.* | .) usage_error "start: --loss-pct must be a number 0..100, not '$loss'" ;;
    esac
    awk -v l="$loss" 'BEGIN { exit !(l >= 0 && l <= 100) }' ||
        usage_error "start: --loss-pct must be 0..100, not '$loss'"
    case "$prefix" in
    '' | *[!a-z0-9]* | ??????????*) usage_error "start: --prefix must be 1..9 of a-z 0-9, not '$prefix'" ;;
    esac
    need_root
    bin=$(abspath "$bin")
    find_binaries "$bin"
    netem=false
    if [ "$delay" -gt 0 ] || awk -v l="$loss" 'BEGIN { exit !(l > 0) }'; then
        netem=true
        command -v tc >/dev/null 2>&1 || die "needs iproute2's tc for --delay-ms/--loss-pct"
    fi

    mkdir -p "$dir"
    dir=$(abspath "$dir")
    check_ini_path "$dir"
    if [ -f "$dir/local-swarm.env" ]; then
        $fresh || die "$dir holds a previous swarm: pass --fresh to delete it (or use another --dir)"
        old_n=$(env_get n)
        old_prefix=$(env_get netns_prefix)
        refuse_running "$old_n"
        [ -z "$old_prefix" ] || teardown "$old_prefix" "$old_n"
        delete_nodes "$old_n"
    fi
    ! ns_exists "$prefix-hub" ||
        die "network namespace $prefix-hub exists: a netns swarm with prefix $prefix runs (stop it with deploy/netns-swarm.sh stop --dir ITS_DIR, or --prefix $prefix), or pass another --prefix"

    # from here on, a failure deletes what was created
    created=0
    trap 'teardown "$prefix" "$created"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ip netns add "$prefix-hub" ||
        die "ip netns add $prefix-hub failed: network namespaces are not available here (a container without CAP_SYS_ADMIN?)"
    ip -n "$prefix-hub" link set lo up
    ip -n "$prefix-hub" link add br0 type bridge
    ip -n "$prefix-hub" link set br0 up
    k=0
    while [ "$k" -lt "$n" ]; do
        ns="$prefix-$k"
        ! ns_exists "$ns" || die "network namespace $ns exists already: pass another --prefix"
        ip netns add "$ns" || die "ip netns add $ns failed"
        created=$((k + 1))
        ip link add eth0 netns "$ns" type veth peer name "v$k" netns "$prefix-hub" ||
            die "could not create the veth pair of $ns (a kernel without veth?)"
        ip -n "$prefix-hub" link set "v$k" master br0
        ip -n "$prefix-hub" link set "v$k" up
        ip -n "$ns" addr add "10.77.0.$((k + 1))/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        if $netem && ! tc -n "$ns" qdisc add dev eth0 root netem delay "${delay}ms" loss "${loss}%" 2>"$dir/tc.err"; then
            cat "$dir/tc.err" >&2
            rm -f "$dir/tc.err"
            die "tc qdisc add dev eth0 root netem failed: this kernel has no netem qdisc (sch_netem: modprobe sch_netem, or a kernel built with CONFIG_NET_SCH_NETEM); --delay-ms 0 --loss-pct 0 runs without it"
        fi
        rm -f "$dir/tc.err"
        k=$((k + 1))
    done

    write_shards "$root/data/topic-train.jsonl" "$n"
    model="$root/models/tiny-gpt2-fortunes"
    k=0
    while [ "$k" -lt "$n" ]; do
        mkdir -p "$dir/node$k"
        boot=""
        [ "$k" -eq 0 ] || boot=tcp://10.77.0.1:7702
        write_config "$k" "tcp://10.77.0.$((k + 1)):7701" "tcp://10.77.0.$((k + 1)):7702" "$boot" \
            $((k + 1)) "Node $k of a network-namespace swarm, written by deploy/netns-swarm.sh start;
it runs in network namespace $prefix-$k (ip netns exec $prefix-$k ...)."
        k=$((k + 1))
    done
    write_env "n=$n" "bin=$bin" "steps=$steps" "lr=$lr" "netns_prefix=$prefix" \
        "delay_ms=$delay" "loss_pct=$loss"

    if $netem; then
        echo "$prog: $n hosts $prefix-0 .. $prefix-$((n - 1)) (10.77.0.1 .. 10.77.0.$n) on a bridge in $prefix-hub, netem delay ${delay} ms loss ${loss}% on each"
    else
        echo "$prog: $n hosts $prefix-0 .. $prefix-$((n - 1)) (10.77.0.1 .. 10.77.0.$n) on a bridge in $prefix-hub, no netem"
    fi
    start_nodes "$prefix" 10.77.0.1 "$steps steps per node"
    trap - EXIT INT TERM
    sh "$local_swarm" status --dir "$dir"
    echo
    echo "Watch them:"
    echo "  deploy/netns-swarm.sh status --dir $dir"
    echo "  $swarmctl status --state-dir $dir/node0/state"
    echo "  tail -f $dir/node0/swarmd.log"
    echo "  ip netns exec $prefix-1 tc -s qdisc show dev eth0      # netem's counters (drops)"
    echo "  deploy/netns-swarm.sh wait --dir $dir"
    echo "  deploy/netns-swarm.sh stop --dir $dir                   # also deletes the namespaces"
}

# ---- status, wait, stop -----------------------------------------------------------------

parse_opts() {
    rest=""
    while [ $# -gt 0 ]; do
        case "$1" in
        --dir)
            [ $# -ge 2 ] || usage_error "$verb: --dir needs a value"
            dir=$2
            shift 2
            ;;
        --prefix)
            [ "$verb" = stop ] || usage_error "$verb: unknown option '$1'"
            [ $# -ge 2 ] || usage_error "$verb: --prefix needs a value"
            prefix=$2
            prefix_given=true
            shift 2
            ;;
        --timeout | --progress)
            [ "$verb" = wait ] || usage_error "$verb: unknown option '$1'"
            [ $# -ge 2 ] || usage_error "$verb: $1 needs a value"
            rest="$rest $1 $2"
            shift 2
            ;;
        *) usage_error "$verb: unknown option '$1'" ;;
        esac
    done
}

cmd_status() {
    parse_opts "$@"
    [ -f "$dir/local-swarm.env" ] || die "$dir: no netns swarm here (start one with deploy/netns-swarm.sh start N --dir $dir)"
    sh "$local_swarm" status --dir "$dir"
    prefix=$(env_get netns_prefix)
    n=$(env_get n)
    k=0
    while [ "$k" -lt "$n" ]; do
        if ns_exists "$prefix-$k"; then
            q=$(tc -n "$prefix-$k" qdisc show dev eth0 2>/dev/null | head -n 1)
            echo "node$k: namespace $prefix-$k, 10.77.0.$((k + 1)), qdisc: ${q:-?}"
        else
            echo "node$k: namespace $prefix-$k: gone"
        fi
        k=$((k + 1))
    done
}

cmd_wait() {
    parse_opts "$@"
    # shellcheck disable=SC2086 # $rest: option words
    exec sh "$local_swarm" wait --dir "$dir" $rest
}

cmd_stop() {
    parse_opts "$@"
    need_root
    n=0
    if [ -f "$dir/local-swarm.env" ]; then
        n=$(env_get n)
        $prefix_given || prefix=$(env_get netns_prefix)
        sh "$local_swarm" stop --dir "$dir" || rc=1
    elif ! $prefix_given; then
        die "$dir: no netns swarm here; to delete the namespaces of a prefix: deploy/netns-swarm.sh stop --prefix P"
    fi
    # namespaces P-0 .. of a partial or foreign start: as many as exist
    while ns_exists "$prefix-$n"; do n=$((n + 1)); done
    teardown "$prefix" "$n"
    return "$rc"
}

# ---- main -----------------------------------------------------------------------------

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
verb=$1
shift
dir="$root/build-release/netns-swarm"
prefix=swt
prefix_given=false
rc=0
case "$verb" in
-h | --help | help) usage ;;
start) cmd_start "$@" ;;
status) cmd_status "$@" ;;
wait) cmd_wait "$@" ;;
stop) cmd_stop "$@" ;;
*) usage_error "unknown command '$verb' (start, status, wait, stop)" ;;
esac
