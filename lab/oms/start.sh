#!/bin/sh
# The OMS double's container entry (the image's ENTRYPOINT), version @VERSION@. It reads the
# mounted config.yaml, serves GET /oms/health on OMS_HOST_IP:nginx_server_port (busybox httpd)
# and logs to stdout (`docker logs`). A container started with IS_UPGRADE=true waits until the
# metadata databases are at its version (docker_init.sh, or from 4.1.0
# docker_oms_ce_version_upgrade.sh, run in this container or in another node's of the region,
# puts them there), then starts its services and logs the success line. While it runs it writes a
# heartbeat row into the cm_hb database every second.
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
httpd -p "${OMS_HOST_IP:-127.0.0.1}:${port:-8089}" -h /www
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
fi
# A running OMS writes its heartbeat (and its tasks' progress) into the metadata every few
# seconds: a dump taken while it runs is not the state it stopped with.
while :; do
    $M "$hb_db" -e "INSERT INTO heatbeat_sequence () VALUES ()" 2>/dev/null
    sleep 1
done
