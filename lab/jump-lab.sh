#!/bin/sh
# Bastions for real: sshd instances in network namespaces, each reachable only from the one
# before it.
#
#   lab/jump-lab.sh start DIR TAG   build the namespaces and links, start one sshd in each
#   lab/jump-lab.sh stop DIR TAG    stop them, remove the namespaces and routes
#
#   this machine --- b1 10.250.TAG.2:2222 --- b2 10.251.TAG.2:22 --- t 10.252.TAG.2:22
#
# This machine reaches b1 only, b1 reaches b2, b2 reaches t. On this machine the two far
# subnets are `unreachable` routes: a direct connection fails at once and nothing leaves it.
# DIR receives id_ed25519 (the client key, authorised on all three), known_hosts (the three
# host keys, as ssh writes them) and b1/, b2/, t/ (each an sshd-lab.sh directory, whose
# sshd.log logs every login). TAG (1-250) keeps labs apart. Needs root and iproute2.
set -eu
cmd=${1:?usage: jump-lab.sh start|stop DIR TAG}
dir=${2:?usage: jump-lab.sh start|stop DIR TAG}
tag=${3:?usage: jump-lab.sh start|stop DIR TAG}
here=$(cd "$(dirname "$0")" && pwd)
ns() { echo "capj$tag-$1"; }

stop() {
    for n in b1 b2 t; do
        [ -d "$dir/$n" ] && "$here/sshd-lab.sh" stop "$dir/$n" || true
        ip netns del "$(ns $n)" 2>/dev/null || true
    done
    ip route del unreachable "10.251.$tag.0/30" 2>/dev/null || true
    ip route del unreachable "10.252.$tag.0/30" 2>/dev/null || true
    ip link del "cj${tag}r" 2>/dev/null || true
}

case $cmd in
start)
    command -v ip >/dev/null || { echo "jump-lab: ip not found; install iproute2" >&2; exit 1; }
    stop
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for n in b1 b2 t; do
        ip netns add "$(ns $n)"
        ip -n "$(ns $n)" link set lo up
    done
    # this machine <-> b1
    ip link add "cj${tag}r" type veth peer name "cj${tag}a" netns "$(ns b1)"
    ip addr add "10.250.$tag.1/30" dev "cj${tag}r"
    ip link set "cj${tag}r" up
    ip -n "$(ns b1)" addr add "10.250.$tag.2/30" dev "cj${tag}a"
    ip -n "$(ns b1)" link set "cj${tag}a" up
    # b1 <-> b2
    ip -n "$(ns b1)" link add "cj${tag}b" type veth peer name "cj${tag}c" netns "$(ns b2)"
    ip -n "$(ns b1)" addr add "10.251.$tag.1/30" dev "cj${tag}b"
    ip -n "$(ns b1)" link set "cj${tag}b" up
    ip -n "$(ns b2)" addr add "10.251.$tag.2/30" dev "cj${tag}c"
    ip -n "$(ns b2)" link set "cj${tag}c" up
    # b2 <-> t
    ip -n "$(ns b2)" link add "cj${tag}d" type veth peer name "cj${tag}e" netns "$(ns t)"
    ip -n "$(ns b2)" addr add "10.252.$tag.1/30" dev "cj${tag}d"
    ip -n "$(ns b2)" link set "cj${tag}d" up
    ip -n "$(ns t)" addr add "10.252.$tag.2/30" dev "cj${tag}e"
    ip -n "$(ns t)" link set "cj${tag}e" up
    # Nothing for the far subnets leaves this machine (no default route takes them).
    ip route add unreachable "10.251.$tag.0/30"
    ip route add unreachable "10.252.$tag.0/30"

    [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C capstan-jump-lab -f "$dir/id_ed25519"
    : > "$dir/known_hosts"
    for spec in "b1 10.250.$tag.2 2222" "b2 10.251.$tag.2 22" "t 10.252.$tag.2 22"; do
        set -- $spec
        mkdir -p "$dir/$1"
        cp "$dir/id_ed25519" "$dir/id_ed25519.pub" "$dir/$1/"
        LAB_SSHD_NETNS=$(ns "$1") LAB_SSHD_ADDR=$2 LAB_SSHD_LOGLEVEL=INFO \
            "$here/sshd-lab.sh" start "$dir/$1" "$3"
        cat "$dir/$1/known_hosts" >> "$dir/known_hosts"
    done
    ;;
stop)
    stop
    ;;
*)
    echo "usage: jump-lab.sh start|stop DIR TAG" >&2
    exit 2
    ;;
esac
