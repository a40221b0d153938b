#!/usr/bin/env python3
# Stands up the OpenMLDB double on this machine (lab/openmldb/README.md).
#
#   lab.py install SPEC.json        lay out every component's install, the release and ZooKeeper's data
#   lab.py start SPEC.json          start every component with its bin/start.sh (tablets first)
#   lab.py stop SPEC.json           stop them, and remove ZooKeeper's data
#   lab.py state ZK_CLUSTER ROOT    print the cluster metadata (JSON)
#   lab.py knob ZK_CLUSTER ROOT NAME JSON   set a failure knob (README: Knobs)
#   lab.py write ZK_CLUSTER ROOT DB.TABLE N  writes reach a table: its Rows grow by N
#
# SPEC: {"zk_cluster", "zk_root_path", "from", "to", "release", "spark_release",
#        "auto_failover", "tables": [{"db", "name", "partitions", "replicas"}],
#        "components": [{"name", "role", "root", "endpoint", "spark_home"?, "mon"?,
#                        "properties"? (extra taskmanager.properties lines)}], "knobs"?}
# Tables are placed as the simulation's openmldb model places them: partition p of table i is
# led by tablet (i + p) mod n, its followers are the next tablets in inventory order.
import sys

# No __pycache__ beside the binary (it is part of bin/, which the playbook snapshots).
sys.dont_write_bytecode = True
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import labkit  # noqa: E402
import openmldb as ob  # noqa: E402
from labkit import on_spec, set_knob, write  # noqa: E402


def banner(version):
    return "%s-%s" % (version, hashlib.sha1(version.encode()).hexdigest()[:7])


def lay_bin(root, version):
    src = open(os.path.join(HERE, "openmldb.py")).read().replace("@VERSION@", banner(version)).replace(
        "@LABKIT@", labkit.LABDIR)
    write(os.path.join(root, "bin/openmldb"), src, 0o755)
    shutil.copy(os.path.join(HERE, "start.sh"), os.path.join(root, "bin/start.sh"))
    write(os.path.join(root, "bin/mon"), open(os.path.join(HERE, "mon.py")).read(), 0o755)
    write(os.path.join(root, "tools/openmldb_ops.py"), open(os.path.join(HERE, "openmldb_ops.py")).read(), 0o755)


def lay_taskmanager_dir(root, version):
    write(os.path.join(root, "taskmanager/bin/taskmanager.sh"),
          "#!/bin/sh\n# The TaskManager stand-in (the real one starts the Java server).\n"
          "cd \"$(dirname \"$0\")/../..\" || exit 1\n"
          "exec python3 ./bin/openmldb --role=taskmanager --conf=./conf/taskmanager.properties "
          "--taskmanager_root=./taskmanager\n", 0o755)
    write(os.path.join(root, "taskmanager/lib/openmldb-taskmanager-%s.jar" % version),
          "openmldb-taskmanager %s\n" % version)


def lay_spark(path, version):
    write(os.path.join(path, "jars/openmldb-spark-core.jar"), "openmldb spark for %s\n" % version)
    write(os.path.join(path, "RELEASE"), "Spark 3.2.1 (OpenMLDB Spark distribution for %s)\n" % version)


def install(spec):
    zk = ob.ZkStore(spec["zk_cluster"], spec["zk_root_path"])
    os.makedirs(zk.dir, exist_ok=True)
    tablets = [c["endpoint"] for c in spec["components"] if c["role"] == "tablet"]
    for c in spec["components"]:
        root = c["root"]
        lay_bin(root, spec["from"])
        if c["role"] == "taskmanager":
            host, port = c["endpoint"].rsplit(":", 1)
            write(os.path.join(root, "conf/taskmanager.properties"),
                  "server.host=%s\nserver.port=%s\nzookeeper.cluster=%s\nzookeeper.root_path=%s\n"
                  "spark.home=%s\njob.log.path=./logs\n%s"
                  % (host, port, spec["zk_cluster"], spec["zk_root_path"], c["spark_home"],
                     "".join("%s=%s\n" % kv for kv in sorted(c.get("properties", {}).items()))))
            lay_taskmanager_dir(root, spec["from"])
            lay_spark(c["spark_home"], spec["from"])
        else:
            flags = ["--role=%s" % c["role"], "--endpoint=%s" % c["endpoint"],
                     "--zk_cluster=%s" % spec["zk_cluster"], "--zk_root_path=%s" % spec["zk_root_path"],
                     "--log_dir=./logs"]
            if c["role"] == "tablet":
                flags.append("--db_root_path=./db")
            write(os.path.join(root, "conf/%s.flags" % c["role"]), "\n".join(flags) + "\n")
    rel = spec["release"]
    lay_bin(rel, spec["to"])
    lay_taskmanager_dir(rel, spec["to"])
    if spec.get("spark_release"):
        lay_spark(spec["spark_release"], spec["to"])
    tables = []
    n = len(tablets)
    for i, t in enumerate(spec.get("tables", [])):
        r = min(t.get("replicas", 1), n)
        parts = []
        for p in range(t.get("partitions", 1)):
            lead = (i + p) % n
            parts.append({"pid": p, "replicas": [
                {"ep": tablets[(lead + k) % n], "leader": k == 0, "alive": True} for k in range(r)]})
        tables.append({"db": t["db"], "name": t["name"], "tid": i + 1, "replicanum": r,
                       "rows": 100 * (i + 1), "storage": "memory", "partitions": parts})
    state = {"auto_failover": spec.get("auto_failover", True), "nodes": {}, "tablets": tablets,
             "tables": tables, "ops": [], "next_op": 1, "knobs": spec.get("knobs", {})}
    zk.write(state)


ORDER = ["tablet", "nameserver", "apiserver", "taskmanager"]


def ctl(spec, op):
    comps = sorted(spec["components"], key=lambda c: ORDER.index(c["role"]))
    if op == "stop":
        comps.reverse()
    for c in comps:
        argv = ["bash", os.path.join(c["root"], "bin/start.sh"), op, c["role"]]
        if op == "start" and c.get("mon"):
            argv.append("mon")
        out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        token = "Start %s success" % c["role"] if op == "start" else "Stop"
        if op == "start" and token not in out.stdout:
            sys.exit("lab.py: %s did not start:\n%s" % (c["name"], out.stdout + out.stderr))
    if op == "stop":
        zk = ob.ZkStore(spec["zk_cluster"], spec["zk_root_path"])
        shutil.rmtree(zk.dir, ignore_errors=True)


def write_rows(zk_cluster, root, table, n):
    """Writes reach a table: its Rows grow by N (what a client's inserts would do)."""
    def grow(st):
        for t in st["tables"]:
            if "%s.%s" % (t["db"], t["name"]) == table:
                t["rows"] = t.get("rows", 0) + int(n)
    ob.ZkStore(zk_cluster, root).update(grow)


COMMANDS = {
    "install": on_spec(install),
    "start": on_spec(lambda spec: ctl(spec, "start")),
    "stop": on_spec(lambda spec: ctl(spec, "stop")),
    "state": lambda zk_cluster, root: ob.ZkStore(zk_cluster, root).read(),
    "write": write_rows,
    "knob": lambda zk_cluster, root, name, value: set_knob(ob.ZkStore(zk_cluster, root), name, value),
}


if __name__ == "__main__":
    labkit.main(sys.argv[1:], COMMANDS, __file__)
