#!/usr/bin/env python3
# observer (OceanBase_CE @VERSION@) BUILD_VERSION=@BUILD@
# The OceanBase double's `bin/observer` (lab/oceanbase/README.md), installed with the version
# above (the simulation's model reads a binary's version from that line, as `-V` prints it).
#
#   bin/observer -V     prints the version line and the build lines, as the real one does
#   bin/observer        reads ../etc/observer.conf, daemonises, writes ../run/observer.pid, listens
#                       on its RPC port, registers with the cluster's state, and after a start-up
#                       delay serves the sys tenant over the MySQL protocol on its SQL port until
#                       killed. Killed, it answers nothing: its ports refuse connections.
import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, "@LABDIR@")

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
    # once the server has bound its RPC port or died (a pipe from the daemon says which), so that
    # what the caller reads next does not depend on how loaded the machine is. Serving SQL comes
    # later, as on a real server.
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
    say = lambda level, msg: print("[%s] %s %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), level, msg), flush=True)
    if knobs.get("no_restart", {}).get(me) == VERSION:
        say("ERROR", "observer %s failed to start (knob no_restart)" % VERSION)
        os.write(ready_w, b"died")
        os._exit(1)
    rpc = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rpc.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        rpc.bind((conf["ip"], conf["rpc_port"]))
    except OSError as e:
        say("ERROR", "bind %s: %s" % (me, e))
        os.write(ready_w, b"died")
        os._exit(1)
    rpc.listen(16)
    from systenant import SysTenant
    from mysqlwire import Session
    sys_tenant = SysTenant(conf["registry"])
    d = sys_tenant.db()
    d.execute("UPDATE server SET pid = ?, build_version = ?, serving_since = NULL WHERE ip = ? AND rpc_port = ?",
              (os.getpid(), BUILD, conf["ip"], conf["rpc_port"]))
    d.close()
    os.write(ready_w, b"ok")
    os.close(ready_w)
    threading.Thread(target=lambda: [rpc.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    # The SQL port is held from the start (bound, not listening: a client is refused, as by a
    # server still starting) and serves after the start-up delay.
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((conf["ip"], conf["sql_port"]))
    except OSError as e:
        say("ERROR", "bind %s:%d: %s" % (conf["ip"], conf["sql_port"], e))
        os._exit(1)
    time.sleep(float(knobs.get("start_seconds", 0.5)))
    srv.listen(64)
    d = sys_tenant.db()
    d.execute("UPDATE server SET serving_since = ? WHERE ip = ? AND rpc_port = ?",
              (time.time(), conf["ip"], conf["rpc_port"]))
    d.close()
    say("INFO", "observer %s serving SQL on %s:%d" % (BUILD, conf["ip"], conf["sql_port"]))
    crash_after = knobs.get("crash_after", {}).get(me)
    served = [0]
    lock = threading.Lock()

    def handler(sql, params):
        with lock:
            served[0] += 1
            if crash_after is not None and served[0] > crash_after:
                say("ERROR", "observer %s crashed (knob crash_after)" % me)
                os._exit(1)
        return sys_tenant.handle(sql, params)

    users = {conf.get("user", "root"): conf.get("password")}
    while True:
        c, _ = srv.accept()
        s = Session(c, handler, users, "5.7.25-OceanBase_CE-v%s" % VERSION)

        def serve(s=s, c=c):
            try:
                s.serve()
            except Exception as e:  # a broken client ends its session, not the server
                say("WARN", "session ended: %r" % (e,))
            finally:
                c.close()
        threading.Thread(target=serve, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
