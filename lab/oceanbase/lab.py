#!/usr/bin/env python3
# Lays out the OceanBase double's observers on this machine (lab/oceanbase/README.md).
#
#   lab.py install SPEC.json    every observer's home (bin/observer at `from`, etc/observer.conf),
#                               the release (bin/observer at `to`) and the registry directory
#   lab.py start SPEC.json      start every observer (each daemonises and registers)
#   lab.py stop SPEC.json       kill them (SIGKILL, as obd stops observers)
#   lab.py knob SPEC.json NAME JSON   set a knob (no_restart: {"ip:rpc_port": "4.2.1.8"})
#
# SPEC: {"registry", "from": [version, build], "to": [version, build], "release",
#        "observers": [{"name", "home", "ip", "rpc_port", "sql_port", "zone"}]}
# The sys tenant that reads the registry is served by the tests (tests/it/oceanbase.rs), over the
# MySQL protocol, from capstan's ObCluster.
import json
import os
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))


def lay_binary(home, version, build):
    src = open(os.path.join(HERE, "observer.py")).read()
    src = src.replace("@VERSION@", version).replace("@BUILD@", build)
    os.makedirs(os.path.join(home, "bin"), exist_ok=True)
    path = os.path.join(home, "bin/observer")
    with open(path, "w") as f:
        f.write(src)
    os.chmod(path, 0o755)


def install(spec):
    os.makedirs(spec["registry"], exist_ok=True)
    for o in spec["observers"]:
        lay_binary(o["home"], *spec["from"])
        os.makedirs(os.path.join(o["home"], "etc"), exist_ok=True)
        conf = {k: o[k] for k in ("ip", "rpc_port", "sql_port", "zone")}
        conf["registry"] = spec["registry"]
        with open(os.path.join(o["home"], "etc/observer.conf"), "w") as f:
            json.dump(conf, f, indent=1, sort_keys=True)
    lay_binary(spec["release"], *spec["to"])


def pid_of(o):
    try:
        return int(open(os.path.join(o["home"], "run/observer.pid")).read().strip())
    except (OSError, ValueError):
        return None


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: see the header of lab/oceanbase/lab.py")
    spec = json.load(open(argv[1]))
    if argv[0] == "install":
        install(spec)
    elif argv[0] == "start":
        for o in spec["observers"]:
            subprocess.run([os.path.join(o["home"], "bin/observer")], check=True, stdin=subprocess.DEVNULL)
    elif argv[0] == "stop":
        for o in spec["observers"]:
            pid = pid_of(o)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    elif argv[0] == "knob" and len(argv) == 4:
        path = os.path.join(spec["registry"], "knobs.json")
        knobs = json.load(open(path)) if os.path.exists(path) else {}
        knobs[argv[2]] = json.loads(argv[3])
        with open(path, "w") as f:
            json.dump(knobs, f)
    else:
        sys.exit("usage: see the header of lab/oceanbase/lab.py")


if __name__ == "__main__":
    main(sys.argv[1:])
