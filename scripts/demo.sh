#!/bin/sh
# The main job (README): build capstan and rehearse the README example upgrade in simulation.
# The simulation is embedded in the binary and needs no network, no hosts and no services.
set -eu
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=""
for p in build-essential pkg-config libssl-dev zlib1g-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
cargo build --release --locked
exec ./target/release/capstan simulate "$@"
