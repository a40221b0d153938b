#!/bin/sh
# The OMS double's container entry (the image's ENTRYPOINT), version @VERSION@. It reads the
# mounted config.yaml, serves GET /oms/health and the console's OpenAPI on nginx_server_port
# (console.sh under busybox nc) and logs to stdout (`docker logs`). A container started with IS_UPGRADE=true waits until the
# metadata databases are at its version (docker_init.sh, or from 4.1.0
# docker_oms_ce_version_upgrade.sh, run in this container or in another node's of the region,
# puts them there), then starts its services and logs the success line. While it runs it writes a
# heartbeat row into the cm_hb database and its running tasks' progress into rm every second.
VERSION=@VERSION@
CFG=/home/admin/conf/config.yaml
# A command given to `docker run` replaces the services (the guide runs `IMAGE bash` only to
# copy the deploy script out of the image).
if [ $# -gt 0 ]; then exec "$@"; fi
trap 'echo "OMS $VERSION stopping"; exit 0' TERM
echo "OMS $VERSION starting (OMS_HOST_IP=$OMS_HOST_IP IS_UPGRADE=${IS_UPGRADE:-false})"
if [ ! -f "$CFG" ]; then
    echo "fatal: $CFG is missing (mount it with -v)" >&2
    exit 3
fi
. /usr/lib/oms-double/metadb.sh
port=$(cfg nginx_server_port)
mkdir -p /www/oms
health() { printf '{"code":200,"success":true,"data":{"healthy":%s,"version":"%s"}}' "$1" "$VERSION" > /www/oms/health; }
health false
# busybox nc cannot bind one address: the console listens on the port on every address (the
# lab's nodes share one machine, each on its own port).
nc -ll -p "${port:-8089}" -e /usr/lib/oms-double/console.sh &
at_version() {
    v=$($M -e "SELECT version FROM oms_version ORDER BY gmt_modified DESC, version DESC LIMIT 1" "$rm_db" 2>/dev/null)
    [ "$v" = "$VERSION" ]
}
# The services take a while to come up (the guide sleeps 300 s before docker_init.sh); the
# double takes READY_S seconds, then says it is ready and lets docker_init.sh work.
READY_S=3
sleep "$READY_S"
touch /tmp/oms-ready
echo "OMS $VERSION: services are up, ready for docker_init.sh"
if [ "${IS_UPGRADE:-false}" = true ]; then
    echo "upgrade mode: waiting for docker_init.sh to bring the metadata to $VERSION"
    until at_version; do sleep 1; done
fi
echo "OMS $VERSION: services started"
if [ -f /home/ds/store/knob_unhealthy ]; then
    echo "OMS $VERSION: the ghana service does not answer"
else
    health true
    echo "OMS service start successfully"
    # The knob user_creates: a user creates a project and an HBase data source on the new
    # console as soon as it serves (the guide's rollback to 4.1.0 is then not allowed). Nothing is
    # logged: the success line stays the last one, as the health check reads it.
    if [ "$VERSION" = 4.2.3-CE ] && [ -f /home/ds/store/knob_user_creates ]; then
        $M "$rm_db" -e "INSERT IGNORE INTO oms_project (id, project_name, project_type, project_status) VALUES ('np_new_$OMS_HOST_IP', 'created_on_423', 'MIGRATION', 'INIT'); INSERT IGNORE INTO oms_data_source (id, name, type) VALUES ('e_hbase_$OMS_HOST_IP', 'hbase_source', 'HBASE')"
    fi
fi
# A running OMS writes its heartbeat (and its tasks' progress) into the metadata every few
# seconds: a dump taken while it runs is not the state it stopped with.
while :; do
    $M "$hb_db" -e "INSERT INTO heatbeat_sequence () VALUES ()" 2>/dev/null
    $M "$rm_db" -e "UPDATE oms_project_step SET progress = LEAST(progress + 1, 99), gmt_modified = NOW(6) WHERE step_status = 'RUNNING'" 2>/dev/null
    sleep 1
done
