#!/bin/sh
# A lab of real sshd instances on 127.0.0.1, each with its own host key.
#
#   lab/sshd-lab.sh start DIR PORT[:nosftp]...   start one sshd per port
#   lab/sshd-lab.sh stop DIR                     stop them
#
# DIR receives: id_ed25519 (a client key authorised on every instance), known_hosts (every
# instance's host key, as [127.0.0.1]:PORT), and hPORT/ (host key, sshd_config, pid, log).
# `:nosftp` starts that instance without the SFTP subsystem (uploads fall back to scp).
# LAB_SSHD_EXTRA: lines put first in every instance's sshd_config, so they win over the lab's
# own (the benchmarks pin the key exchange with "KexAlgorithms curve25519-sha256", so every
# client negotiates the same one).
# LAB_SSHD_ADDR: the address to listen on (default 127.0.0.1); LAB_SSHD_NETNS: a network
# namespace to start the instances in (lab/jump-lab.sh builds bastions and hosts that way).
# Needs openssh-server (scripts/test.sh installs it) and root, as sshd needs to switch users.
#
# A lab host is a clean account: each sshd runs in a private mount namespace in which the
# login account's ~/.bashrc reads as empty. sshd runs every command through the account's
# shell, and bash reads ~/.bashrc for a command that came over SSH; a development machine's own
# (pyenv's `init`: 0.4 s and a lock file per shell) made every lab command slow and, once a test
# killed a shell holding pyenv's lock, made every later command wait 60 s for it. The machine's
# file is untouched. LAB_SSHD_KEEP_RC=1 keeps it (to measure what it costs).
set -eu
cmd=${1:?usage: sshd-lab.sh start DIR PORT... | stop DIR}
dir=${2:?usage: sshd-lab.sh start DIR PORT... | stop DIR}
shift 2

# start_sshd HOSTDIR: sshd with that instance's config, its account's ~/.bashrc masked (above).
start_sshd() {
    if [ -n "${LAB_SSHD_NETNS:-}" ]; then
        set -- "$@" ip netns exec "$LAB_SSHD_NETNS"
    fi
    h=$1
    shift
    rc="$HOME/.bashrc"
    if [ "${LAB_SSHD_KEEP_RC:-}" != 1 ] && [ -s "$rc" ]; then
        if unshare --mount --propagation slave true 2>/dev/null; then
            "$@" unshare --mount --propagation slave \
                sh -c 'mount --bind /dev/null "$1" && shift && exec "$@"' mask "$rc" \
                "$sshd_bin" -f "$h/sshd_config" -E "$h/sshd.log"
            return
        fi
        echo "sshd-lab: cannot mask $rc (unshare -m needs root): the lab's commands read it" >&2
    fi
    "$@" "$sshd_bin" -f "$h/sshd_config" -E "$h/sshd.log"
}

case $cmd in
start)
    sshd_bin=$(command -v sshd || true)
    [ -n "$sshd_bin" ] || sshd_bin=/usr/sbin/sshd
    if [ ! -x "$sshd_bin" ]; then
        echo "sshd-lab: sshd not found; install openssh-server (scripts/test.sh does)" >&2
        exit 1
    fi
    sftp_server=
    for s in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server; do
        [ -x "$s" ] && sftp_server=$s && break
    done
    mkdir -p "$dir" /run/sshd
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C capstan-lab -f "$dir/id_ed25519"
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    chmod 644 "$dir/authorized_keys"
    : > "$dir/known_hosts"
    addr=${LAB_SSHD_ADDR:-127.0.0.1}
    for spec in "$@"; do
        port=${spec%%:*}
        h="$dir/h$port"
        mkdir -p "$h"
        [ -f "$h/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C "lab-$port" -f "$h/host_key"
        subsystem="Subsystem sftp ${sftp_server:-internal-sftp}"
        case $spec in *:nosftp) subsystem="" ;; esac
        # The extra lines go first: sshd takes the first value it reads of a keyword, so they
        # override the lab's own below (a `Match` block would have to come last: none is given).
        cat > "$h/sshd_config" <<CONF
${LAB_SSHD_EXTRA:-}
Port $port
ListenAddress $addr
HostKey $h/host_key
PidFile $h/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin yes
UsePAM no
StrictModes no
MaxStartups 200
MaxSessions 200
LogLevel ${LAB_SSHD_LOGLEVEL:-ERROR}
# The instances of one lab are one machine: they share a host lock, and labs do not share one.
# In /tmp (sticky, writable by every login): the lab directory is root's alone.
SetEnv CAPSTAN_HOST_LOCK=/tmp/capstan-host-lock$(printf %s "$dir" | tr / .)
$subsystem
CONF
        start_sshd "$h"
        if [ "$port" = 22 ]; then
            name=$addr
        else
            name="[$addr]:$port"
        fi
        echo "$name $(cut -d' ' -f1,2 "$h/host_key.pub")" >> "$dir/known_hosts"
    done
    # Wait until every instance has written its pid file (it listens by then).
    for spec in "$@"; do
        port=${spec%%:*}
        i=0
        while [ ! -s "$dir/h$port/sshd.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    done
    ;;
stop)
    for p in "$dir"/h*/sshd.pid; do
        [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
    rm -rf "/tmp/capstan-host-lock$(cd "$dir" && pwd | tr / .)"
    ;;
*)
    echo "usage: sshd-lab.sh start DIR PORT... | stop DIR" >&2
    exit 2
    ;;
esac
