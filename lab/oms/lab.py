#!/usr/bin/env python3
# Stands up the OMS double on this machine's Docker engine and MariaDB (lab/oms/README.md).
#
#   lab.py images OUTDIR                  build the OMS images (docker import: no registry) and
#                                          save them as OUTDIR/oms-<version>.tar
#   lab.py install SPEC.json              create the metadata databases and every node's mounts
#                                          and config.yaml, run the old version's containers and
#                                          wait until every console says healthy
#   lab.py stop SPEC.json                 remove the lab's containers and drop its databases
#   lab.py checksums SPEC.json            CHECKSUM TABLE of every table of the metadata databases (JSON)
#   lab.py knob SPEC.json NODE NAME on|off   init_fail / upgrade_fail / unhealthy / no_openapi /
#                                          user_creates for a node's next container
#
# SPEC: {"prefix", "image": "capstan-lab/oms", "from", "db": {host, port, user, password},
#        "databases": {"rm", "cm", "cm_hb"}, "old_version_table": true, "region",
#        "nodes": [{"name", "ip", "port", "dir", "container", "region"?, "cm_hb"?}],
#        "projects"?: [{"id", "name", "type", "status", "steps": [[NAME, STATUS], ...]}],
#        "data_sources"?: [{"id", "name", "type"}]}
# A node's `region` and `cm_hb` put it in another region, with that region's heartbeat database
# (its config.yaml names it, and lists the region's nodes as cm_nodes).
import sys

sys.dont_write_bytecode = True
import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import labkit  # noqa: E402
from labkit import on_spec  # noqa: E402

VERSIONS = ["4.1.0-CE", "4.2.2-CE", "4.2.3-CE"]
UPGRADE_410 = ["docker_remote_deploy_410_up_423_version.sh", "docker_oms_ce_version_upgrade.sh",
               "docker_oms_ce_version_roll_back.sh"]


def run(argv, **kw):
    out = subprocess.run(argv, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit("lab.py: %s failed:\n%s%s" % (" ".join(argv[:3]), out.stdout, out.stderr))
    return out.stdout


def libs_of(binary):
    """The shared libraries `binary` loads (ldd), to copy into an image's root."""
    paths = []
    for line in run(["ldd", binary]).splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/") and os.path.exists(p):
                paths.append(p)
    return paths


def images(outdir):
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        for d in ["bin", "usr/bin", "proc", "dev", "sys", "tmp", "etc", "root", "www/oms",
                  "home/admin/conf", "home/admin/logs", "home/ds/store", "home/ds/run"]:
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
        for applet in run(["/bin/busybox", "--list"]).split():
            if applet != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", applet))
        # The metadata databases are MySQL: the image carries the host's client and its libraries.
        client = shutil.which("mariadb") or shutil.which("mysql")
        shutil.copy(client, os.path.join(root, "usr/bin/mariadb"))
        for lib in libs_of(client):
            dest = os.path.join(root, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(lib, dest)
        os.makedirs(os.path.join(root, "usr/lib/oms-double"), exist_ok=True)
        shutil.copy(os.path.join(HERE, "metadb.sh"), os.path.join(root, "usr/lib/oms-double/metadb.sh"))
        shutil.copy(os.path.join(HERE, "console.sh"), os.path.join(root, "usr/lib/oms-double/console.sh"))
        os.chmod(os.path.join(root, "usr/lib/oms-double/console.sh"), 0o755)
        # The guide's `docker run IMAGE bash`: busybox has no bash applet.
        with open(os.path.join(root, "bin/bash"), "w") as f:
            f.write("#!/bin/sh\nexec /bin/sh \"$@\"\n")
        os.chmod(os.path.join(root, "bin/bash"), 0o755)
        privileged = ""
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        for v in VERSIONS:
            with open(os.path.join(root, "start.sh"), "w") as f:
                f.write(open(os.path.join(HERE, "start.sh")).read().replace("@VERSION@", v))
            init = os.path.join(root, "root/docker_init.sh")
            if os.path.exists(init):
                os.remove(init)
            if v != "4.1.0-CE":
                with open(init, "w") as f:
                    f.write(open(os.path.join(HERE, "docker_init.sh")).read().replace("@VERSION@", v))
                os.chmod(init, 0o755)
            # The 4.1.0 -> 4.2.3 procedure's scripts ship in the 4.2.3 image only.
            for script in UPGRADE_410:
                path = os.path.join(root, "root", script)
                if os.path.exists(path):
                    os.remove(path)
                if v == "4.2.3-CE":
                    with open(path, "w") as f:
                        f.write(open(os.path.join(HERE, script)).read()
                                .replace("@VERSION@", v).replace("@PRIVILEGED@", privileged))
                    os.chmod(path, 0o755)
            tag = "capstan-lab/oms:%s" % v
            tar = subprocess.run(["tar", "-C", root, "-cf", "-", "."], capture_output=True, check=True).stdout
            imp = subprocess.run(["docker", "import", "--change", "ENV PATH=/bin:/usr/bin",
                                  "--change", 'ENTRYPOINT ["/bin/sh", "/start.sh"]', "-", tag],
                                 input=tar, capture_output=True)
            if imp.returncode != 0:
                sys.exit("lab.py: docker import failed: %s" % imp.stderr.decode())
            run(["docker", "save", "-o", os.path.join(outdir, "oms-%s.tar" % v), tag])
            if privileged == "":
                # The vendor runs OMS --privileged; an engine that itself runs in a container
                # refuses it ("unable to apply caps"), and the deploy script must then do without.
                probe = subprocess.run(["docker", "run", "--rm", "--privileged", tag, "true"],
                                       capture_output=True)
                privileged = "true" if probe.returncode == 0 else "false"


def mysql(spec, sql, db=None):
    d = spec["db"]
    argv = ["mariadb", "--protocol=TCP", "-h" + d["host"], "-P%d" % d["port"], "-u" + d["user"],
            "-p" + d["password"], "-N", "-e", sql]
    if db:
        argv.append(db)
    return run(argv)


def region_of(spec, node):
    return node.get("region", spec["region"])


def hb_of(spec, node):
    """The node's region's heartbeat database: each region has its own (a node's `cm_hb`)."""
    return node.get("cm_hb", spec["databases"]["cm_hb"])


def all_dbs(spec):
    """rm, cm and every region's cm_hb, each once."""
    out = [spec["databases"]["rm"], spec["databases"]["cm"]]
    for db in [spec["databases"]["cm_hb"]] + [hb_of(spec, n) for n in spec["nodes"]]:
        if db not in out:
            out.append(db)
    return out


def config_yaml(spec, node):
    d, dbs = spec["db"], spec["databases"]
    mates = [n for n in spec["nodes"] if region_of(spec, n) == region_of(spec, node)]
    return ("oms_meta_host: %s\noms_meta_port: %d\noms_meta_user: %s\noms_meta_password: %s\n"
            "drc_rm_db: %s\ndrc_cm_db: %s\ndrc_cm_heartbeat_db: %s\ncm_region: %s\ncm_location: 0\n"
            "cm_is_default: true\ncm_nodes:\n%sconsole_nodes:\n%snginx_server_port: %d\n"
            % (d["host"], d["port"], d["user"], d["password"], dbs["rm"], dbs["cm"], hb_of(spec, node),
               region_of(spec, node), "".join("  - %s\n" % n["ip"] for n in mates),
               "".join("  - %s\n" % n["ip"] for n in spec["nodes"]), node["port"]))


# The projects a console lists unless the spec gives its own: incremental synchronization
# running (allowed by the guide), one suspended; full migration and verification finished.
PROJECTS = [
    {"id": "np_1", "name": "mysql_to_ob_orders", "type": "MIGRATION", "status": "RUNNING",
     "steps": [["TRANSFER_PRECHECK", "FINISHED"], ["STRUCT_TRANSFER", "FINISHED"],
               ["FULL_TRANSFER", "FINISHED"], ["INCR_TRANSFER", "RUNNING"], ["FULL_VERIFIER", "FINISHED"]]},
    {"id": "np_2", "name": "ob_to_kafka_events", "type": "SYNC", "status": "RUNNING",
     "steps": [["TRANSFER_PRECHECK", "FINISHED"], ["INCR_TRANSFER", "RUNNING"]]},
    {"id": "np_3", "name": "pg_to_ob_archive", "type": "MIGRATION", "status": "SUSPEND",
     "steps": [["TRANSFER_PRECHECK", "FINISHED"], ["FULL_TRANSFER", "SUSPEND"]]},
]
SOURCES = [{"id": "e_1", "name": "orders_mysql", "type": "MYSQL"},
           {"id": "e_2", "name": "ob_tenant", "type": "OB_MYSQL"},
           {"id": "e_3", "name": "events_kafka", "type": "KAFKA"}]


def projects_sql(spec):
    """The rm tables the double's console answers from. Only oms_project's id, project_name and
    project_status are the vendor's (its upgrade guides query them); the rest is the double's."""
    q = lambda v: "'%s'" % str(v).replace("'", "''")
    out = ("CREATE TABLE oms_project (id VARCHAR(64) NOT NULL PRIMARY KEY, project_name VARCHAR(128) NOT NULL, "
           "project_type VARCHAR(32) NOT NULL, project_status VARCHAR(32) NOT NULL, "
           "gmt_create TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)); "
           "CREATE TABLE oms_project_step (project_id VARCHAR(64) NOT NULL, step_order INT NOT NULL, "
           "step_name VARCHAR(64) NOT NULL, step_status VARCHAR(32) NOT NULL, progress INT NOT NULL DEFAULT 0, "
           "gmt_modified TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (project_id, step_order)); "
           "CREATE TABLE oms_data_source (id VARCHAR(64) NOT NULL PRIMARY KEY, name VARCHAR(128) NOT NULL, "
           "type VARCHAR(32) NOT NULL)")
    for i, p in enumerate(spec.get("projects", PROJECTS)):
        # gmt_create in the listed order, a second apart (ListProjects lists the newest first).
        out += ("; INSERT INTO oms_project VALUES (%s, %s, %s, %s, NOW(6) - INTERVAL %d SECOND)"
                % (q(p["id"]), q(p["name"]), q(p.get("type", "MIGRATION")), q(p["status"]), 1000 - i))
        for k, (name, st) in enumerate(p.get("steps", [])):
            prog = 100 if st == "FINISHED" else 40
            out += ("; INSERT INTO oms_project_step (project_id, step_order, step_name, step_status, progress) "
                    "VALUES (%s, %d, %s, %s, %d)" % (q(p["id"]), k + 1, q(name), q(st), prog))
    for s in spec.get("data_sources", SOURCES):
        out += "; INSERT INTO oms_data_source VALUES (%s, %s, %s)" % (q(s["id"]), q(s["name"]), q(s["type"]))
    return out


def install(spec):
    dbs = spec["databases"]
    for db in all_dbs(spec):
        mysql(spec, "DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s`" % (db, db))
    ha = json.dumps({"enable": True, "perceiveStoreClientCheckpoint": False,
                     "refetchStoreIntervalMin": 120, "enableHandleBothDelayAndRestart": False})
    rm = ("CREATE TABLE oms_normal_config (cfg_name VARCHAR(128) NOT NULL PRIMARY KEY, "
          "cfg_value TEXT NOT NULL, gmt_modified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); "
          "INSERT INTO oms_normal_config (cfg_name, cfg_value) VALUES ('ha.config', '%s'), "
          "('oms.timezone', '+08:00'); "
          "%s" % (ha.replace("'", "''"), projects_sql(spec)))
    if spec.get("old_version_table", True):
        rm += ("; CREATE TABLE oms_version (version VARCHAR(64) NOT NULL, gmt_modified TIMESTAMP "
               "NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (version)); "
               "INSERT INTO oms_version (version) VALUES ('%s')" % spec["from"])
    mysql(spec, rm, dbs["rm"])
    mysql(spec, "CREATE TABLE cm_node (ip VARCHAR(64) NOT NULL PRIMARY KEY, region VARCHAR(64) NOT NULL, "
                "status VARCHAR(32) NOT NULL); INSERT INTO cm_node VALUES %s"
          % ", ".join("('%s', '%s', 'ONLINE')" % (n["ip"], region_of(spec, n)) for n in spec["nodes"]),
          dbs["cm"])
    for hb in all_dbs(spec)[2:]:
        mysql(spec, "CREATE TABLE heatbeat_sequence (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
                    "gmt_created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); "
                    "INSERT INTO heatbeat_sequence (id) VALUES %s"
              % ", ".join("(%d)" % i for i in range(1, 201)), hb)
    for n in spec["nodes"]:
        d = n["dir"]
        for sub in ["oms_logs", "oms_store", "oms_run"]:
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, "config.yaml"), "w") as f:
            f.write(config_yaml(spec, n))
        subprocess.run(["docker", "rm", "-f", n["container"]], capture_output=True)
        run(["docker", "run", "-dit", "--net", "host",
             "-v", "%s/config.yaml:/home/admin/conf/config.yaml" % d,
             "-v", "%s/oms_logs:/home/admin/logs" % d,
             "-v", "%s/oms_store:/home/ds/store" % d,
             "-v", "%s/oms_run:/home/ds/run" % d,
             "-e", "OMS_HOST_IP=%s" % n["ip"],
             # No --privileged: this engine (inside a container itself) refuses it ("unable to
             # apply caps"); the playbook is run with -p privileged=false on the lab.
             "--pids-limit", "-1", "--ulimit", "nproc=65535:65535",
             "--name", n["container"], "%s:%s" % (spec["image"], spec["from"])])
    wait_healthy(spec)


def wait_healthy(spec, timeout=60):
    """Returns once every node's console says healthy, as a cluster about to be upgraded is: the
    double's services take a few seconds to come up (start.sh), and a test that reads the console
    at once would find nginx's 502. A node whose `unhealthy` knob is on is not waited for."""
    import time
    deadline = time.monotonic() + timeout
    for n in spec["nodes"]:
        if os.path.exists(os.path.join(n["dir"], "oms_store", "knob_unhealthy")):
            continue
        while True:
            r = subprocess.run(["docker", "exec", n["container"], "cat", "/www/oms/health"],
                               capture_output=True, text=True)
            if '"healthy":true' in r.stdout:
                break
            if time.monotonic() > deadline:
                sys.exit("lab.py: %s did not become healthy within %d s: %s%s"
                         % (n["container"], timeout, r.stdout, r.stderr))
            time.sleep(0.2)


def stop(spec):
    names = [n["container"] for n in spec["nodes"]]
    listed = run(["docker", "ps", "-a", "--format", "{{.Names}}"]).split()
    # The 4.1.0 deploy script's containers, and the one the deploy script is copied out of.
    names += ["oms-%s-%s-%d" % (v, n["ip"], n["port"]) for v in VERSIONS for n in spec["nodes"]]
    names.append(spec["prefix"] + "-config-tool")
    for c in listed:
        if any(c == n or c.startswith(n + "_") or c.startswith(n + "-") for n in names):
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
    for db in all_dbs(spec):
        subprocess.run(["mariadb", "--protocol=TCP", "-h" + spec["db"]["host"], "-P%d" % spec["db"]["port"],
                        "-u" + spec["db"]["user"], "-p" + spec["db"]["password"], "-e",
                        "DROP DATABASE IF EXISTS `%s`" % db], capture_output=True)


def checksums(spec):
    out = {}
    for db in all_dbs(spec):
        tables = mysql(spec, "SHOW TABLES", db).split()
        for t in sorted(tables):
            line = mysql(spec, "CHECKSUM TABLE `%s`.`%s`" % (db, t)).split()
            cols = mysql(spec, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) FROM "
                               "information_schema.COLUMNS WHERE TABLE_SCHEMA = '%s' AND TABLE_NAME = '%s'"
                         % (db, t)).strip()
            out["%s.%s" % (db, t)] = "%s %s" % (line[-1], cols)
    print(json.dumps(out, indent=1, sort_keys=True))


def knob(spec, node, name, on):
    n = [x for x in spec["nodes"] if x["name"] == node][0]
    path = os.path.join(n["dir"], "oms_store", "knob_" + name)
    if on == "on":
        open(path, "w").close()
    elif os.path.exists(path):
        os.remove(path)


COMMANDS = {
    "images": images,
    "install": on_spec(install),
    "stop": on_spec(stop),
    "checksums": on_spec(checksums),
    "knob": on_spec(knob),
}


if __name__ == "__main__":
    labkit.main(sys.argv[1:], COMMANDS, __file__)
