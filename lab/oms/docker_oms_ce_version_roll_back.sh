#!/bin/sh
# The OMS double's /root/docker_oms_ce_version_roll_back.sh (the @VERSION@ image): the guide's
# roll-back of a 4.1.0 -> @VERSION@ upgrade, run in the @VERSION@ container before it is removed.
# It takes @VERSION@'s schema changes out of the rm, cm and cm_hb databases again and removes
# @VERSION@ from oms_version; running it twice, or after an upgrade that stopped halfway, is
# harmless. Success is the line "[Completed] All initialization steps are executed."; it exits 0
# when it fails, as the vendor's scripts do.
VERSION=@VERSION@
. /usr/lib/oms-double/metadb.sh
echo "[roll_back] $(date '+%F %T') start: the MetaDB back from $VERSION to 4.1.0"
if ! { $M "$rm_db" -e "DROP TABLE IF EXISTS oms_alarm_rule; ALTER TABLE oms_normal_config DROP COLUMN IF EXISTS cfg_desc" &&
    $M "$cm_db" -e "ALTER TABLE cm_node DROP COLUMN IF EXISTS version" &&
    $M "$hb_db" -e "ALTER TABLE heatbeat_sequence DROP COLUMN IF EXISTS node_ip"; }; then
    echo "[ERROR] the roll-back of the MetaDB failed"
    exit 0
fi
$M "$rm_db" -e "DELETE FROM oms_version WHERE version = '$VERSION'" 2>/dev/null || true
echo "[Completed] All initialization steps are executed."
