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
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SCRIPTS = ["upgrade_checker.py", "upgrade_pre.py", "upgrade_health_checker.py", "upgrade_post.py"]


def lay(path, template, **subst):
    src = open(os.path.join(HERE, template)).read()
    for k, v in subst.items():
        src = src.replace("@%s@" % k, v)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(src)
    os.chmod(path, 0o755)


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


def pid_of(path):
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


def kill(path):
    pid = pid_of(path)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


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


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: see the header of lab/oceanbase/lab.py")
    spec = json.load(open(argv[1]))
    if argv[0] == "install":
        install(spec)
    elif argv[0] == "start":
        start(spec)
    elif argv[0] == "stop":
        for o in spec["observers"]:
            kill(os.path.join(o["home"], "run/observer.pid"))
        kill(os.path.join(spec["registry"], "obproxy.pid"))
    elif argv[0] == "kill" and len(argv) == 3:
        o = next(o for o in spec["observers"] if o["name"] == argv[2])
        kill(os.path.join(o["home"], "run/observer.pid"))
    elif argv[0] == "knob" and len(argv) == 4:
        path = os.path.join(spec["registry"], "knobs.json")
        knobs = json.load(open(path)) if os.path.exists(path) else {}
        knobs[argv[2]] = json.loads(argv[3])
        with open(path + ".tmp", "w") as f:
            json.dump(knobs, f)
        os.replace(path + ".tmp", path)
    else:
        sys.exit("usage: see the header of lab/oceanbase/lab.py")


if __name__ == "__main__":
    main(sys.argv[1:])
