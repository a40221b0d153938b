#!/bin/sh
# Reproduces every figure of docs/performance.md with one command (as root, on a Debian machine):
#   bench/run.sh [all|fanout|warm|engine|sim|scale|collections|fleet|hostcost] [bench.py options...]
# Installs what the peers need (openssh, a venv with asyncssh, parallel-ssh, ssh2-python and
# ansible-core, pinned), builds capstan in release mode, and prints Markdown tables on stdout
# (also kept in bench/last-run.md). Nothing but sshd instances on 127.0.0.1 is contacted.
set -eu
cd "$(dirname "$0")/.."
what=${1:-all}
[ $# -gt 0 ] && shift

. scripts/packages.sh
ensure_packages build-essential pkg-config libssl-dev zlib1g-dev openssh-server openssh-client python3-venv python3 procps
as_root mkdir -p /run/sshd
# The SSH user of the benchmarks: a plain /bin/sh login, so no shell start-up is measured.
id capstan-test >/dev/null 2>&1 || as_root useradd -m -s /bin/sh capstan-test

venv=bench/.venv
if [ ! -x "$venv/bin/ansible-playbook" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r bench/requirements.txt
fi
cargo build --release --locked -q

run() { "$venv/bin/python" bench/bench.py "$@"; }
{
    echo "# capstan benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "versions: $(./target/release/capstan --version), $(ssh -V 2>&1), $("$venv/bin/python" --version),"
    echo "  $("$venv/bin/pip" freeze | grep -iE '^(asyncssh|parallel-ssh|ssh2-python|ansible-core)=' | tr '\n' ' ')"
    echo
    case $what in
    all)
        run fanout "$@"; echo
        run warm; echo
        run engine; echo
        run sim; echo
        run scale; echo
        run collections; echo
        run fleet; echo
        run hostcost ;;
    *) run "$what" "$@" ;;
    esac
} | tee bench/last-run.md
