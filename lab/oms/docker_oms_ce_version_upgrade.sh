#!/bin/sh
# The OMS double's /root/docker_oms_ce_version_upgrade.sh (the @VERSION@ image): upgrades the
# MetaDB of a 4.1.0 install, in the container the 4.1.0 deploy tool started. It applies
# @VERSION@'s schema changes to the rm, cm and cm_hb databases (the same as docker_init.sh) and
# records @VERSION@ in oms_version (created when missing; `schema_up` in metadb.sh); the waiting
# container then starts its services. Success is the line "[Completed] All initialization steps are executed."; like the
# vendor's scripts it exits 0 when it fails. Knob: oms_store/knob_upgrade_fail (the cm change
# fails after the rm change was made).
VERSION=@VERSION@
. /usr/lib/oms-double/metadb.sh
echo "[upgrade] $(date '+%F %T') start: the MetaDB to $VERSION, config $CFG"
old=$($M -e "SELECT version FROM oms_version ORDER BY gmt_modified DESC, version DESC LIMIT 1" "$rm_db" 2>/dev/null || true)
# Running it again on a MetaDB it upgraded already is harmless (another node of the region).
case "$old" in
"" | 4.1.0* | "$VERSION") ;;
*)
    echo "[ERROR] this script upgrades OMS Community Edition 4.1.0; the MetaDB records $old"
    exit 0
    ;;
esac
echo "[upgrade] upgrading the MetaDB from ${old:-4.1.0 (no oms_version)} to $VERSION"
schema_up /home/ds/store/knob_upgrade_fail || exit 0
echo "[Completed] All initialization steps are executed."
