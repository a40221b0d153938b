#!/bin/sh
# The main job (README): build capstan and rehearse the README example upgrade in simulation.
# The simulation is embedded in the binary and needs no network, no hosts and no services.
set -eu
cd "$(dirname "$0")/.."
. scripts/packages.sh
ensure_packages build-essential pkg-config libssl-dev zlib1g-dev
cargo build --release --locked
exec ./target/release/capstan simulate "$@"
