# Sourced by the OMS double's in-container scripts (start.sh, docker_init.sh, the 4.1.0 path's
# upgrade and roll-back scripts; /usr/lib/oms-double/metadb.sh in every image): the mounted
# config.yaml's values, a MetaDB client on them, and the schema change of an upgrade.
CFG=/home/admin/conf/config.yaml
cfg() { sed -n "s/^$1: *//p" "$CFG" | head -n 1; }
M="mariadb --protocol=TCP -h$(cfg oms_meta_host) -P$(cfg oms_meta_port) -u$(cfg oms_meta_user) -p$(cfg oms_meta_password) -N"
rm_db=$(cfg drc_rm_db)
cm_db=$(cfg drc_cm_db)
hb_db=$(cfg drc_cm_heartbeat_db)

# The metadata as version $VERSION has it: a table in rm, a column in oms_normal_config, cm_node
# and heatbeat_sequence, then $VERSION recorded in oms_version (created when missing). $1: a knob
# file; when it exists the cm change fails after the rm change was made.
schema_up() {
    $M "$rm_db" -e "CREATE TABLE IF NOT EXISTS oms_alarm_rule (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(128) NOT NULL, enabled TINYINT NOT NULL DEFAULT 1); ALTER TABLE oms_normal_config ADD COLUMN IF NOT EXISTS cfg_desc VARCHAR(256) DEFAULT NULL" || return 1
    if [ -n "${1:-}" ] && [ -f "$1" ]; then
        echo "[ERROR] schema change of $cm_db failed: Lost connection to server during query"
        return 1
    fi
    $M "$cm_db" -e "ALTER TABLE cm_node ADD COLUMN IF NOT EXISTS version VARCHAR(32) DEFAULT NULL; UPDATE cm_node SET version = '$VERSION'" || return 1
    $M "$hb_db" -e "ALTER TABLE heatbeat_sequence ADD COLUMN IF NOT EXISTS node_ip VARCHAR(64) DEFAULT NULL" || return 1
    $M "$rm_db" -e "CREATE TABLE IF NOT EXISTS oms_version (version VARCHAR(64) NOT NULL, gmt_modified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (version)); REPLACE INTO oms_version (version) VALUES ('$VERSION')"
}
