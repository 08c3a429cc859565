#!/bin/sh
# Installs swarmd as a systemd service (docs/operations.md, "Running under
# systemd").  Run it from a checkout, as root:
#
#   deploy/install.sh [--prefix DIR] [--root DIR] [--dry-run]
#                     [--build-dir DIR] [--no-build]
#
#   --prefix DIR     where binaries, model and docs go (default /usr/local)
#   --root DIR       install into a staging root (a package build, a test):
#                    every path is prefixed with DIR and no system user is
#                    created; the files still name the real paths
#   --dry-run        print what would be done, change nothing
#   --build-dir DIR  the meson build directory (default build-release)
#   --no-build       use the binaries already in --build-dir
#
# It builds a release (meson setup --buildtype=release; ninja), then installs:
#   PREFIX/bin/swarmd, PREFIX/bin/swarmctl
#   PREFIX/share/swarmtune/models/tiny-gpt2-fortunes  the bundled base model
#   PREFIX/share/swarmtune/data/*.jsonl                the bundled data sets
#   PREFIX/share/doc/swarmtune/*.md                    the operator's docs
#   /etc/systemd/system/swarmd.service                 always replaced
#   /etc/swarmd/swarmd.ini        from deploy/swarmd.example.ini, only if absent
# and creates the system user `swarmd` if missing.  The model and data go
# under PREFIX/share, read-only, not into the state directory: they are the
# package's, shared by every run, while /var/lib/swarmd belongs to the node
# (systemd creates it, owned by swarmd, mode 0700, at the first start).
# Running it again gives the same result (the config is never overwritten).
set -eu

prefix=/usr/local
root=""
dry=0
build=""
do_build=1

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --build-dir) [ $# -ge 2 ] || usage; build=$2; shift 2 ;;
    --build-dir=*) build=${1#--build-dir=}; shift ;;
    --dry-run) dry=1; shift ;;
    --no-build) do_build=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: $1: unknown option (try --help)" >&2; exit 2 ;;
    esac
done

src=$(cd "$(dirname "$0")/.." && pwd)
build=${build:-$src/build-release}
case "$prefix" in /*) ;; *) echo "install.sh: --prefix $prefix: must be an absolute path" >&2; exit 2 ;; esac
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/
if [ -n "$root" ]; then
    case "$root" in /*) ;; *) root=$(pwd)/$root ;; esac
    root=${root%/}
fi

bindir=$prefix/bin
sharedir=$prefix/share/swarmtune
docdir=$prefix/share/doc/swarmtune
model=$sharedir/models/tiny-gpt2-fortunes
data=$sharedir/data
unitdir=/etc/systemd/system
confdir=/etc/swarmd
statedir=/var/lib/swarmd

say() { printf 'install.sh: %s\n' "$*"; }
# run CMD...: runs it, or under --dry-run only prints it
run() {
    if [ "$dry" -eq 1 ]; then
        printf '  would run: %s\n' "$*"
    else
        "$@"
    fi
}

if [ "$dry" -eq 0 ] && [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: installing into / needs root: run it with sudo, or use --root DIR or --dry-run" >&2
    exit 1
fi
[ "$dry" -eq 1 ] && say "dry run: nothing is changed"

# --- build ------------------------------------------------------------------
if [ "$do_build" -eq 1 ]; then
    if [ ! -f "$build/build.ninja" ]; then
        # -Dsystemd=enabled: without libsystemd swarmd never sends READY=1 and
        # systemd would time out its start (install libsystemd-dev).
        run meson setup "$build" "$src" --buildtype=release -Dtests=false -Dsystemd=enabled
    fi
    run ninja -C "$build" daemon/swarmd cli/swarmctl
fi
for b in daemon/swarmd cli/swarmctl; do
    if [ ! -x "$build/$b" ] && [ "$dry" -eq 0 ]; then
        echo "install.sh: $build/$b: not built (drop --no-build, or pass --build-dir)" >&2
        exit 1
    fi
done

# --- files ------------------------------------------------------------------
# install_file SRC DST MODE: DST replaced atomically (a running swarmd keeps
# its old binary; cp over it would fail with "text file busy").
install_file() {
    if [ "$dry" -eq 1 ]; then
        printf '  would install: %s -> %s (mode %s)\n' "$1" "$2" "$3"
        return
    fi
    install -m "$3" "$1" "$2.new.$$"
    mv -f "$2.new.$$" "$2"
}

say "binaries -> $root$bindir"
run install -d -m 0755 "$root$bindir"
install_file "$build/daemon/swarmd" "$root$bindir/swarmd" 0755
install_file "$build/cli/swarmctl" "$root$bindir/swarmctl" 0755

say "bundled model -> $root$model"
run install -d -m 0755 "$root$model"
for f in "$src"/models/tiny-gpt2-fortunes/*; do
    install_file "$f" "$root$model/$(basename "$f")" 0644
done

say "bundled data -> $root$data"
run install -d -m 0755 "$root$data"
for f in "$src"/data/*.jsonl "$src"/data/README.md; do
    install_file "$f" "$root$data/$(basename "$f")" 0644
done

say "docs -> $root$docdir"
run install -d -m 0755 "$root$docdir"
for f in operations.md configuration.md swarmd.md cli.md; do
    if [ -f "$src/docs/$f" ]; then install_file "$src/docs/$f" "$root$docdir/$f" 0644; fi
done

# The unit names the real binary and docs, wherever --prefix put them.
say "unit -> $root$unitdir/swarmd.service"
run install -d -m 0755 "$root$unitdir"
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp" "$unit_tmp.ini"' EXIT
sed -e "s|^ExecStart=/usr/local/bin/swarmd |ExecStart=$bindir/swarmd |" \
    -e "s|^Documentation=file:/usr/local/share/doc/swarmtune/|Documentation=file:$docdir/|" \
    "$src/deploy/swarmd.service" >"$unit_tmp"
install_file "$unit_tmp" "$root$unitdir/swarmd.service" 0644

# The example with paths for this machine; bootstrap is left out so the first
# start founds a swarm instead of waiting for the example's addresses.
run install -d -m 0755 "$root$confdir"
if [ -e "$root$confdir/swarmd.ini" ]; then
    say "config $root$confdir/swarmd.ini exists: kept as it is"
else
    say "config -> $root$confdir/swarmd.ini (from deploy/swarmd.example.ini)"
    {
        echo "# Installed by deploy/install.sh; edit freely (a reinstall keeps this file)."
        echo "# Paths are absolute: the service reads only what it can see under its"
        echo "# hardening (not /home, /root, /tmp)."
        sed -e "s|^state_dir = .*|state_dir = $statedir|" \
            -e "s|^path = \.\./models/tiny-gpt2-fortunes|path = $model|" \
            -e "s|^\([a-z_]* = \)\.\./data/|\1$data/|" \
            -e "s|^bootstrap = .*|# bootstrap =|" \
            "$src/deploy/swarmd.example.ini"
    } >"$unit_tmp.ini"
    install_file "$unit_tmp.ini" "$root$confdir/swarmd.ini" 0644
fi

# --- user -------------------------------------------------------------------
if [ -n "$root" ]; then
    say "--root: not creating the system user; on the target run:"
    say "  useradd --system --user-group --no-create-home --home-dir $statedir --shell /usr/sbin/nologin swarmd"
elif id -u swarmd >/dev/null 2>&1; then
    say "system user swarmd exists"
else
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    say "creating the system user swarmd"
    run useradd --system --user-group --no-create-home --home-dir "$statedir" \
        --shell "$nologin" swarmd
fi

# --- check ------------------------------------------------------------------
if [ -z "$root" ] && [ "$dry" -eq 0 ]; then
    if "$bindir/swarmd" --config "$confdir/swarmd.ini" --check-config >/dev/null 2>&1; then
        say "$confdir/swarmd.ini is valid"
    else
        say "WARNING: $confdir/swarmd.ini does not validate:"
        "$bindir/swarmd" --config "$confdir/swarmd.ini" --check-config || true
    fi
fi

cat <<EOF

Next steps:
  edit $confdir/swarmd.ini    (data.train: your data; bootstrap: peers to join)
  systemctl daemon-reload && systemctl enable --now swarmd
  journalctl -u swarmd -f
  swarmctl status --state-dir $statedir
EOF
