#!/usr/bin/env python3
# Stands up the DolphinDB double on this machine (lab/dolphindb/README.md).
#
#   lab.py install SPEC.json              lay out every machine's server/ and clusterDemo/, the new
#                                          release's zip beside upgrade.sh, and the cluster state
#   lab.py start SPEC.json                start every machine's controller and agent, then the data
#                                          nodes, and wait until every chunk is COMPLETE
#   lab.py stop SPEC.json                 kill every node of the cluster
#   lab.py state SPEC.json                print the cluster state (JSON)
#   lab.py knob SPEC.json NAME JSON       set a failure knob (stuck_recovering: [chunk ids],
#                                          no_return: {alias: version}, recovery_per_write: s)
#   lab.py plugin DIR NAME VERSION        install plugin NAME built for VERSION in DIR (a server's
#                                          plugins/, or a release's): DIR/NAME/Plugin<Name>.txt
#   lab.py corrupt SPEC.json MACHINE      damage MACHINE's release zip (upgrade.sh then fails with exit 0)
#
# SPEC: {"state", "from", "to", "users": {user: password}, "config": {dfsHAMode, ...},
#        "recovery_s", "chunks", "tables": ["dfs://db/table"], "knobs"?,
#        "machines": [{"name", "server", "controller": [alias, port], "agent": [alias, port],
#                      "datanode": [alias, port]}]}
import sys

sys.dont_write_bytecode = True
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from labkit import JsonState, on_spec, set_knob, wait, write  # noqa: E402
import labkit  # noqa: E402

SCRIPTS = ["startController.sh", "startagent.sh", "stopAllNodes.sh", "upgrade.sh"]


def binary(spec, version):
    return (open(os.path.join(HERE, "dolphindb.py")).read()
            .replace("@VERSION@", version).replace("@STATE@", spec["state"])
            .replace("@LABKIT@", labkit.LABDIR))


def short(version):
    return version.split()[0]


def lay_server(spec, root, version):
    """The files of server/ that a release brings (what upgrade.sh copies over)."""
    write(os.path.join(root, "dolphindb"), binary(spec, version), 0o755)
    write(os.path.join(root, "libDolphinDB.so"), "DolphinDB server library %s\n" % version)
    write(os.path.join(root, "web/index.html"), "<html><body>DolphinDB %s</body></html>\n" % version)
    write(os.path.join(root, "dolphindb.dos"), "// server start-up script (%s)\n" % version)


def site(m, role):
    alias, port = m[role]
    return "127.0.0.1:%d:%s" % (port, alias)


def install(spec):
    ms = spec["machines"]
    nodes_file = "localSite,mode\n" + "".join(
        "%s,%s\n" % (site(m, role), role) for role in ("controller", "agent", "datanode") for m in ms)
    cfg = spec["config"]
    for m in ms:
        server = m["server"]
        demo = os.path.join(server, "clusterDemo")
        lay_server(spec, server, spec["from"])
        write(os.path.join(server, "dolphindb.cfg"), "localSite=localhost:8848:local8848\nmode=single\n")
        write(os.path.join(server, "dolphindb.lic"), "lab licence\n")
        os.makedirs(demo, exist_ok=True)
        for s in SCRIPTS:
            shutil.copy(os.path.join(HERE, s), os.path.join(demo, s))
        write(os.path.join(demo, "config/controller.cfg"),
              "mode=controller\nlocalSite=%s\ndfsHAMode=%s\ndfsReplicationFactor=%s\n"
              "dfsReplicaReliabilityLevel=%s\ndataSync=1\ndfsRecoveryWaitTime=30000\n"
              % (site(m, "controller"), cfg["dfsHAMode"], cfg["dfsReplicationFactor"],
                 cfg["dfsReplicaReliabilityLevel"]))
        write(os.path.join(demo, "config/agent.cfg"),
              "mode=agent\nlocalSite=%s\ncontrollerSite=%s\nsites=%s\n"
              % (site(m, "agent"), site(ms[0], "controller"),
                 ",".join("%s:controller" % site(x, "controller") for x in ms)))
        write(os.path.join(demo, "config/cluster.nodes"), nodes_file)
        write(os.path.join(demo, "config/cluster.cfg"),
              "maxMemSize=8\nworkerNum=4\nchunkMetaDir=/data/<ALIAS>/storage\n")
        ctl, dn = m["controller"][0], m["datanode"][0]
        write(os.path.join(demo, "data/%s/dfsMeta/DFSMetaLog.0" % ctl), "dfs meta log of %s\n" % ctl)
        write(os.path.join(demo, "data/%s/dfsMeta/DFSMasterMetaCheckpoint.0" % ctl), "checkpoint\n")
        write(os.path.join(demo, "data/%s/raft/raftHardstate0" % ctl), "term 1\n")
        write(os.path.join(demo, "data/%s/raft/raftWAL" % ctl), "raft wal of %s\n" % ctl)
        for i in range(spec["chunks"]):
            write(os.path.join(demo, "data/%s/storage/CHUNK_METADATA/chunk%d.meta" % (dn, i)),
                  "chunk %d on %s\n" % (i, dn))
        os.makedirs(os.path.join(demo, "log"), exist_ok=True)
        # The new release, where the offline upgrade.sh looks for it.
        stage = os.path.join(spec["state"] + ".release")
        shutil.rmtree(stage, ignore_errors=True)
        lay_server(spec, os.path.join(stage, "server"), spec["to"])
        write(os.path.join(stage, "server/dolphindb.cfg"), "localSite=localhost:8848:local8848\nmode=single\n")
        write(os.path.join(stage, "server/dolphindb.lic"), "trial licence\n")
        write(os.path.join(stage, "server/clusterDemo/config/cluster.nodes"), "localSite,mode\n")
        zpath = os.path.join(demo, "DolphinDB_Linux64_V%s.zip" % short(spec["to"]))
        with zipfile.ZipFile(zpath, "w") as z:
            for d, _, files in os.walk(stage):
                for f in files:
                    full = os.path.join(d, f)
                    z.write(full, os.path.relpath(full, stage))
        shutil.rmtree(stage, ignore_errors=True)
    nodes, order = {}, []
    for role in ("controller", "agent", "datanode"):
        for m in ms:
            alias, port = m[role]
            demo = os.path.join(m["server"], "clusterDemo")
            conf = {}
            if role == "controller":
                conf["dfsMetaDir"] = os.path.join(demo, "data/%s/dfsMeta" % alias)
            if role == "datanode":
                conf["chunkMetaDir"] = os.path.join(demo, "data/%s/storage" % alias)
            nodes[alias] = {"mode": role, "machine": m["name"], "host": "127.0.0.1", "port": port,
                            "pid": None, "serving": False, "version": spec["from"], "config": conf}
            order.append(alias)
    dns = [m["datanode"][0] for m in ms]
    rf = int(spec["config"]["dfsReplicationFactor"])
    chunks = [{"id": "c0a8%04x-0000-4000-8000-%012d" % (i, i), "file": "/stock/2023010%d/Apple" % (i % 9 + 1),
               "replicas": [dns[(i + k) % len(dns)] for k in range(min(rf, len(dns)))],
               "version": 1, "recovering_until": 0} for i in range(spec["chunks"])]
    state = {"nodes": nodes, "order": order, "leader": ms[0]["controller"][0], "chunks": chunks,
             "tables": {t: [] for t in spec.get("tables", [])}, "start_requests": [],
             "users": spec.get("users", {"admin": "123456"}), "config": spec["config"],
             "recovery_s": spec.get("recovery_s", 1.0), "knobs": spec.get("knobs", {})}
    with open(spec["state"], "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)


def state(spec):
    """The cluster's state file, locked as the double's nodes lock it."""
    return JsonState(spec["state"], spec["state"] + ".lock")


def read(spec):
    return state(spec).read()


def update(spec, fn):
    return state(spec).update(fn)


def serving(spec, aliases):
    sys.path.insert(0, HERE)
    import dolphindb as d  # noqa: E402
    st = read(spec)
    return all(d.alive(st, a) for a in aliases)


def start(spec):
    ms = spec["machines"]
    for m in ms:
        demo = os.path.join(m["server"], "clusterDemo")
        for s in ("startController.sh", "startagent.sh"):
            subprocess.run(["sh", s], cwd=demo, check=True, stdin=subprocess.DEVNULL)
    base = [m[r][0] for m in ms for r in ("controller", "agent")]
    wait("the controllers and agents serving", lambda: serving(spec, base))
    dns = [m["datanode"][0] for m in ms]

    def ask(st):
        st["start_requests"] = list(dns)
    update(spec, ask)
    wait("the data nodes serving", lambda: serving(spec, dns))
    wait("every chunk COMPLETE",
         lambda: all(c["recovering_until"] <= time.time() for c in read(spec)["chunks"]),
         timeout=60)


def stop(spec):
    st = read(spec)
    pids = [n["pid"] for n in st["nodes"].values() if n.get("pid")]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        time.sleep(0.3)


def corrupt(spec, machine):
    m = [x for x in spec["machines"] if x["name"] == machine][0]
    z = os.path.join(m["server"], "clusterDemo", "DolphinDB_Linux64_V%s.zip" % short(spec["to"]))
    with open(z, "r+b") as f:
        f.truncate(os.path.getsize(z) // 2)


def plugin(where, name, version):
    """A plugin as DolphinDB describes it to loadPlugin: its directory and Plugin<Name>.txt,
    whose first line is name,library,version (the library itself is not modelled)."""
    lib = "libPlugin%s.so" % name.capitalize()
    write(os.path.join(where, name, "Plugin%s.txt" % name.capitalize()),
          "%s,%s,%s\n" % (name, lib, version))
    write(os.path.join(where, name, lib), "plugin %s %s\n" % (name, version))


COMMANDS = {
    "install": on_spec(install),
    "start": on_spec(start),
    "stop": on_spec(stop),
    "state": on_spec(read),
    "knob": on_spec(lambda spec, name, value: set_knob(state(spec), name, value)),
    "plugin": plugin,
    "corrupt": on_spec(corrupt),
}


if __name__ == "__main__":
    labkit.main(sys.argv[1:], COMMANDS, __file__)
