#!/bin/sh
# The OMS double's /root/docker_init.sh (version @VERSION@): the metadata initialisation of an
# upgrade. It reads the mounted config.yaml, refuses an install older than 4.1.1 (the version the
# rm database's oms_version records), applies this version's schema changes to the rm, cm and
# cm_hb databases, and records @VERSION@ in oms_version. Re-running it is harmless. Run before the
# container's services are up, it fails.
set -e
VERSION=@VERSION@
. /usr/lib/oms-double/metadb.sh
echo "[docker_init] $(date '+%F %T') start, config $CFG"
# Run into a container whose services are still starting, it cannot do its work.
if [ ! -f /tmp/oms-ready ]; then
    echo "[docker_init] ERROR: the OMS services in this container are still starting: run docker_init.sh once they are up" >&2
    exit 1
fi
if [ -f /home/ds/store/knob_init_fail ]; then
    echo "[docker_init] ERROR: schema change of $cm_db failed: Lost connection to server during query" >&2
    exit 1
fi
old=$($M -e "SELECT version FROM oms_version ORDER BY gmt_modified DESC, version DESC LIMIT 1" "$rm_db" 2>/dev/null || true)
num() { echo "$1" | sed 's/-CE$//' | awk -F. '{ printf "%d%03d%03d", $1, $2, $3 }'; }
if [ -z "$old" ] || [ "$(num "$old")" -lt "$(num 4.1.1)" ]; then
    echo "Version before 4.1.1 is not allowed to upgrade."
    exit 1
fi
echo "[docker_init] upgrading the metadata from $old to $VERSION"
schema_up
echo "[docker_init] [Completed] All initialization steps are executed."
