#!/bin/sh
# The OMS double's /root/docker_init.sh (version @VERSION@): the metadata initialisation of an
# upgrade. It reads the mounted config.yaml, refuses an install older than 4.1.1 (the version the
# rm database's oms_version records), applies this version's schema changes to the rm, cm and
# cm_hb databases, and records @VERSION@ in oms_version. Re-running it is harmless.
set -e
VERSION=@VERSION@
CFG=/home/admin/conf/config.yaml
cfg() { sed -n "s/^$1: *//p" "$CFG" | head -n 1; }
M="mariadb --protocol=TCP -h$(cfg oms_meta_host) -P$(cfg oms_meta_port) -u$(cfg oms_meta_user) -p$(cfg oms_meta_password) -N"
rm_db=$(cfg drc_rm_db)
cm_db=$(cfg drc_cm_db)
hb_db=$(cfg drc_cm_heartbeat_db)
echo "[docker_init] $(date '+%F %T') start, config $CFG"
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
$M "$rm_db" -e "CREATE TABLE IF NOT EXISTS oms_alarm_rule (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(128) NOT NULL, enabled TINYINT NOT NULL DEFAULT 1); ALTER TABLE oms_normal_config ADD COLUMN IF NOT EXISTS cfg_desc VARCHAR(256) DEFAULT NULL"
$M "$cm_db" -e "ALTER TABLE cm_node ADD COLUMN IF NOT EXISTS version VARCHAR(32) DEFAULT NULL; UPDATE cm_node SET version = '$VERSION'"
$M "$hb_db" -e "ALTER TABLE heatbeat_sequence ADD COLUMN IF NOT EXISTS node_ip VARCHAR(64) DEFAULT NULL"
$M "$rm_db" -e "CREATE TABLE IF NOT EXISTS oms_version (version VARCHAR(64) NOT NULL, gmt_modified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (version)); REPLACE INTO oms_version (version) VALUES ('$VERSION')"
echo "[docker_init] [Completed] All initialization steps are executed."
