#!/bin/sh
# Installs the Debian packages swarmtune needs, and only those missing.
#   deploy/install-deps.sh run    build and run swarmd / swarmctl
#   deploy/install-deps.sh test   also the test tools (cmocka, clang, python3, node, promtool)
#   deploy/install-deps.sh bench  the test tools, PyTorch (the benchmarks' reference) and matplotlib (their plots)
# Runs apt-get as root (directly, or through sudo when not root).
set -eu

role=${1:-run}
pkgs="build-essential meson ninja-build cmake pkg-config
      libuv1-dev libnng-dev libprotobuf-c-dev protobuf-c-compiler
      libopenblas-dev libsodium-dev libjansson-dev libpcre2-dev libinih-dev libsystemd-dev
      libmicrohttpd-dev"
test_pkgs="libcmocka-dev clang libclang-rt-14-dev python3 python3-numpy python3-regex python3-cryptography
           python3-nacl prometheus nng-utils protobuf-compiler python3-protobuf iproute2 systemd util-linux"
case "$role" in
run) ;;
test | bench)
    pkgs="$pkgs $test_pkgs"
    # The benchmarks compare against PyTorch on top of what the tests use.
    [ "$role" = bench ] && pkgs="$pkgs python3-torch python3-matplotlib"
    # Node.js comes from Debian unless one is already installed (e.g. NodeSource's,
    # which bundles npm and conflicts with Debian's npm package).
    command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
    command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
    ;;
*)
    echo "usage: $0 run|test|bench" >&2
    exit 2
    ;;
esac

missing=""
for p in $pkgs; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
