#!/bin/sh
# The OMS double's /root/docker_remote_deploy_410_up_423_version.sh (the @VERSION@ image): the
# deployment tool of the guide's "Upgrade from V4.1.0 to V4.2.3", pulled out of the new image and
# run on the host:
#   sh docker_remote_deploy_410_up_423_version.sh -o MOUNT_DIR -c CONFIG_YAML -i LOCAL_IP -d IMAGE
# It backs CONFIG_YAML up as config_copy.yaml (beside it), walks the guide's prompts in the
# guide's order (answers read from stdin, one per line), writes MOUNT_DIR/config.yaml and runs the
# new container on MOUNT_DIR's mounts in upgrade mode; the MetaDB is upgraded afterwards, inside
# it, by /root/docker_oms_ce_version_upgrade.sh. Like the vendor's tools it exits 0 when it fails:
# judge it by the container it leaves. The node it deploys is LOCAL_IP; another node of the
# config's cm_nodes is offered remote execution (answered n: deploy it from that node).
VERSION=@VERSION@
# Whether this lab's engine allows --privileged (probed when the image was built).
PRIVILEGED=@PRIVILEGED@
fail() {
    echo "[ERROR] $*"
    exit 0
}
ask() {
    printf '%s ' "$1"
    if ! read -r answer; then
        echo
        fail "no answer to: $1"
    fi
    echo "$answer"
}
mount="" cfg="" ip="" image=""
while getopts "o:c:i:d:" opt; do
    case $opt in
    o) mount=$OPTARG ;;
    c) cfg=$OPTARG ;;
    i) ip=$OPTARG ;;
    d) image=$OPTARG ;;
    *) fail "usage: sh $0 -o <mount directory> -c <config.yaml> -i <local IP> -d <image>" ;;
    esac
done
if [ -z "$mount" ] || [ -z "$cfg" ] || [ -z "$ip" ] || [ -z "$image" ]; then
    fail "usage: sh $0 -o <mount directory> -c <config.yaml> -i <local IP> -d <image>"
fi
[ -f "$cfg" ] || fail "the configuration file $cfg does not exist"
[ -d "$mount" ] || fail "the mount directory $mount does not exist"
get() { sed -n "s/^$1: *//p" "$cfg" | head -n 1; }
nodes=$(sed -n '/^cm_nodes:/,/^[^ ]/s/^ *- *//p' "$cfg")
copy="$(dirname "$cfg")/config_copy.yaml"
cp "$cfg" "$copy" || fail "cannot back up $cfg"
echo "The configuration file is backed up as $copy"
echo "Checking the CPU, memory and disk of this host: the deployment continues (insufficient resources only slow data migration down)"

ask "Select a deployment mode: [1] Multiple Nodes in Single Region [2] Multiple Regions:"
mode=$answer
case $mode in 1 | 2) ;; *) fail "unknown deployment mode: $mode" ;; esac
ask "Select a task: [1] Use Configuration File Uploaded with Script Option [-c] [2] Enter the settings:"
[ "$answer" = 1 ] || fail "task $answer is not supported by this tool's upgrade mode: use the configuration file given with -c"

M="mariadb --protocol=TCP -h$(get oms_meta_host) -P$(get oms_meta_port) -u$(get oms_meta_user) -p$(get oms_meta_password) -N"
if $M -e "SELECT 1" "$(get drc_rm_db)" >/dev/null 2>&1; then
    ask "The specified database names already exist in the MetaDB. Are you sure that you want to continue? [y/n]:"
    [ "$answer" = y ] || fail "deployment cancelled"
    ask "The specified database names already exist in the MetaDB. Do you want to reinitialize the MetaDB? [y/n]:"
    [ "$answer" = y ] || fail "deployment cancelled"
else
    fail "cannot connect to the MetaDB $(get oms_meta_host):$(get oms_meta_port) or its database $(get drc_rm_db)"
fi
echo "Settings:"
sed 's/^\(oms_meta_password:\).*/\1 ******/' "$cfg"
ask "Are the settings correct? [y/n]:"
[ "$answer" = y ] || fail "modify the settings in $cfg and run the tool again"

found="" ssl=""
for n in $nodes; do
    if [ "$n" = "$ip" ]; then
        found=1
        ask "Enter the directory on $n to which the container of OMS Community Edition is mounted:"
        [ "$answer" = "$mount" ] || fail "the mount directory $answer is not the one given with -o ($mount): it must be the V4.1.0 container's"
        ask "Name the image of OMS Community Edition as OMS_IMAGE ($image)? [y/n]:"
        [ "$answer" = y ] || fail "run the tool again with -d <image>"
        ask "Mount an SSL certificate to the container of OMS Community Edition? [y/n]:"
        if [ "$answer" = y ]; then
            ask "Enter the https_key path:"
            key=$answer
            ask "Enter the https_crt path:"
            ssl="-v $answer:/etc/pki/nginx/oms_server.crt -v $key:/etc/pki/nginx/oms_server.key"
        fi
    else
        ask "The IP address $n of the deployment mode is inconsistent with the IP address of this server ($ip). Execute the script on $n remotely? [y/n]:"
        [ "$answer" = y ] && fail "remote execution (SSH with a sudo user) is not modelled by the lab double"
        echo "$n: skipped, deploy it on that node"
    fi
done
[ -n "$found" ] || fail "$ip is not one of the configuration file's cm_nodes ($nodes)"
ask "Write the configuration file to $mount/config.yaml? [y/n]:"
[ "$answer" = y ] || fail "deployment cancelled"
if [ "$mode" = 2 ]; then
    ask "Deploy OMS Community Edition in a new region? [y/n]:"
    [ "$answer" = y ] && fail "a new region is not modelled by the lab double"
fi

# The new version's configuration: the old one with what @VERSION@ adds (written in place: the
# file is a bind mount).
{ cat "$copy"; echo "oms_deployed_version: $VERSION"; } > "$mount/config.yaml" || fail "cannot write $mount/config.yaml"
# The vendor's container name is not documented; the double's is unique per node (its IP and
# console port), and the playbook finds the container by its image and mounts anyway.
name="oms-$VERSION-$ip-$(get nginx_server_port)"
priv=""
[ "$PRIVILEGED" = true ] && priv="--privileged=true"
# shellcheck disable=SC2086
docker run -dit --net host -v "$mount/config.yaml:/home/admin/conf/config.yaml" \
    -v "$mount/oms_logs:/home/admin/logs" -v "$mount/oms_store:/home/ds/store" \
    -v "$mount/oms_run:/home/ds/run" $ssl -e "OMS_HOST_IP=$ip" -e IS_UPGRADE=true $priv \
    --pids-limit -1 --ulimit nproc=65535:65535 --name "$name" "$image" >/dev/null ||
    fail "docker run of $image failed"
echo "OMS Community Edition $VERSION is deployed on $ip (container $name): run /root/docker_oms_ce_version_upgrade.sh in it"
