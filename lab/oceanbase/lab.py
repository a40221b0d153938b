#!/usr/bin/env python3
# Lays out the OceanBase double on this machine (lab/oceanbase/README.md). Not the product.
#
#   lab.py install SPEC.json    the cluster's state (registry/state.sqlite), every observer's home
#                               (bin/observer at `from`, etc/observer.conf) and each release
#                               (bin/observer and the etc/upgrade_*.py stand-ins at its version)
#   lab.py start SPEC.json      start every observer (each daemonises), and obproxy when asked
#   lab.py stop SPEC.json       kill them (SIGKILL, as obd stops observers)
#   lab.py kill SPEC.json NAME  kill one observer
#   lab.py knob SPEC.json NAME JSON   set a knob (lab/oceanbase/README.md lists them)
#
# SPEC: {"registry", "from": [version, build], "releases": [{"dir", "version", "build"}],
#        "tenants": [names], "password": "..." (optional), "obproxy_port": N (optional),
#        "observers": [{"name", "home", "ip", "rpc_port", "sql_port", "zone", "build" (optional:
#                       another build of `from`)}]}
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import labkit  # noqa: E402
from labkit import JsonState, kill, on_spec  # noqa: E402

SCRIPTS = ["upgrade_checker.py", "upgrade_pre.py", "upgrade_health_checker.py", "upgrade_post.py"]


def lay(path, template, **subst):
    labkit.lay(path, os.path.join(HERE, template), **subst)


def install(spec):
    from systenant import SysTenant
    os.makedirs(spec["registry"], exist_ok=True)
    SysTenant.create(spec["registry"], spec["observers"], spec["from"][0], spec.get("tenants", ["tpcc"]))
    for o in spec["observers"]:
        lay(os.path.join(o["home"], "bin/observer"), "observer.py", VERSION=spec["from"][0],
            BUILD=o.get("build", spec["from"][1]), LABDIR=HERE)
        conf = {k: o[k] for k in ("ip", "rpc_port", "sql_port", "zone")}
        conf["registry"] = spec["registry"]
        conf["password"] = spec.get("password", "")
        os.makedirs(os.path.join(o["home"], "etc"), exist_ok=True)
        with open(os.path.join(o["home"], "etc/observer.conf"), "w") as f:
            json.dump(conf, f, indent=1, sort_keys=True)
    for r in spec["releases"]:
        lay(os.path.join(r["dir"], "bin/observer"), "observer.py", VERSION=r["version"], BUILD=r["build"], LABDIR=HERE)
        for s in SCRIPTS:
            lay(os.path.join(r["dir"], "etc", s), "upgrade_script.py", VERSION=r["version"],
                REGISTRY=spec["registry"])


def start(spec):
    for o in spec["observers"]:
        subprocess.run([os.path.join(o["home"], "bin/observer")], check=True, stdin=subprocess.DEVNULL)
    if spec.get("obproxy_port"):
        conf = {"listen": ["127.0.0.1", spec["obproxy_port"]],
                "servers": [[o["ip"], o["sql_port"]] for o in spec["observers"]],
                "pid_file": os.path.join(spec["registry"], "obproxy.pid")}
        path = os.path.join(spec["registry"], "obproxy.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        subprocess.run([sys.executable, os.path.join(HERE, "obproxy.py"), path], check=True,
                       stdin=subprocess.DEVNULL)


def stop(spec):
    for o in spec["observers"]:
        kill(os.path.join(o["home"], "run/observer.pid"))
    kill(os.path.join(spec["registry"], "obproxy.pid"))


def kill_one(spec, name):
    o = next(o for o in spec["observers"] if o["name"] == name)
    kill(os.path.join(o["home"], "run/observer.pid"))


def knob(spec, name, value):
    """The observers read knobs.json at each statement (a flat {name: value})."""
    knobs = JsonState(os.path.join(spec["registry"], "knobs.json"),
                      os.path.join(spec["registry"], "knobs.lock"))
    if not knobs.exists():
        knobs.write({})
    labkit.set_knob(knobs, name, value, flat=True)


COMMANDS = {
    "install": on_spec(install),
    "start": on_spec(start),
    "stop": on_spec(stop),
    "kill": on_spec(kill_one),
    "knob": on_spec(knob),
}


if __name__ == "__main__":
    labkit.main(sys.argv[1:], COMMANDS, __file__)
