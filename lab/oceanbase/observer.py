#!/usr/bin/env python3
# observer (OceanBase_CE @VERSION@) BUILD_VERSION=@BUILD@
# The OceanBase double's `bin/observer` (lab/oceanbase/README.md), installed with the version
# above (the simulation's model reads a binary's version from that line, as `-V` prints it).
#
#   bin/observer -V     prints the version line and the build lines, as the real one does
#   bin/observer        reads ../etc/observer.conf, daemonises, writes ../run/observer.pid,
#                       listens on its RPC port and registers its build version with the lab's
#                       sys tenant (a file in the registry directory), then serves until killed.
import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True

VERSION = "@VERSION@"
BUILD = "@BUILD@"


def main(argv):
    if "-V" in argv:
        print("observer (OceanBase_CE %s)\n\nREVISION: 1-%s\nBUILD_BRANCH: HEAD\nBUILD_TIME: lab\n"
              "BUILD_FLAGS: RelWithDebInfo\nBUILD_VERSION=%s" % (VERSION, BUILD.split("_")[-1], BUILD))
        return 0
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    conf = json.load(open(os.path.join(home, "etc/observer.conf")))
    me = "%s:%d" % (conf["ip"], conf["rpc_port"])
    knobs_file = os.path.join(conf["registry"], "knobs.json")
    knobs = json.load(open(knobs_file)) if os.path.exists(knobs_file) else {}
    os.makedirs(os.path.join(home, "run"), exist_ok=True)
    os.makedirs(os.path.join(home, "log"), exist_ok=True)
    # Daemonise as the real observer does: the command returns, the server runs on. It returns
    # once the server has registered or died (a pipe from the daemon says which), so that what
    # the caller reads next does not depend on how loaded the machine is.
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        import select
        select.select([ready_r], [], [], 10)
        return 0
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    log = open(os.path.join(home, "log/observer.log"), "a")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    with open(os.path.join(home, "run/observer.pid"), "w") as f:
        f.write("%d\n" % os.getpid())
    if knobs.get("no_restart", {}).get(me) == VERSION:
        print("[%s] ERROR observer %s failed to start (knob no_restart)" % (time.ctime(), VERSION), flush=True)
        os.write(ready_w, b"died")
        os._exit(1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((conf["ip"], conf["rpc_port"]))
    except OSError as e:
        print("[%s] ERROR bind %s: %s" % (time.ctime(), me, e), flush=True)
        os.write(ready_w, b"died")
        os._exit(1)
    srv.listen(16)
    reg = os.path.join(conf["registry"], "%s_%d.json" % (conf["ip"], conf["rpc_port"]))
    tmp = reg + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"ip": conf["ip"], "rpc_port": conf["rpc_port"], "pid": os.getpid(), "build_version": BUILD}, f)
    os.replace(tmp, reg)
    print("[%s] INFO observer %s serving on %s" % (time.ctime(), BUILD, me), flush=True)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    while True:
        c, _ = srv.accept()
        c.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
