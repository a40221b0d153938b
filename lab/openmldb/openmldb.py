#!/usr/bin/env python3
# The OpenMLDB double's `bin/openmldb`: one program with roles, as the real binary has.
#
#   bin/openmldb --version                                    prints BANNER
#   bin/openmldb --flagfile=./conf/<c>.flags ...              a server (tablet, nameserver, apiserver)
#   bin/openmldb --role=taskmanager --conf=... --taskmanager_root=...   the TaskManager stand-in
#   bin/openmldb --role=ns_client --zk_cluster=.. --zk_root_path=.. --interactive=false --cmd="..."
#
# lab/openmldb/README.md lists the behaviours it models. The cluster metadata that ZooKeeper holds
# for the real product lives in a directory per `--zk_cluster` and `--zk_root_path` (ZkStore);
# tools/openmldb_ops.py (the double of the ops tool) loads this file as a library.
import fcntl
import http.server
import json
import os
import re
import signal
import socketserver
import sys
import threading
import time

BANNER = "openmldb version @VERSION@"

# Where the lab's "ZooKeeper" keeps its data: one directory per zk_cluster and root path.
ZK_BASE = "/tmp/capstan-openmldb-zk"

# Time an op spends in kInited and then kDoing before it is kDone (the real ones take as long as
# the data takes to move; the double keeps them short so tests stay fast).
OP_INITED_S = 0.1
OP_DOING_S = 0.4


def short_version(banner=BANNER):
    """`0.9.2` from `openmldb version 0.9.2-<commit>`."""
    v = banner.split("openmldb version ", 1)[-1].strip()
    return v.split("-", 1)[0]


class ZkStore:
    """The cluster metadata under one zk_cluster + zk_root_path, as a JSON file with a lock."""

    def __init__(self, zk_cluster, root_path):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", zk_cluster or "")
        self.dir = os.path.join(ZK_BASE, safe + (root_path or "/").replace("/", "_"))
        self.path = os.path.join(self.dir, "state.json")

    def exists(self):
        return os.path.exists(self.path)

    def read(self):
        with open(self.path) as f:
            return json.load(f)

    def update(self, fn):
        """Runs fn(state) under the store's lock and writes the state back; returns fn's value."""
        with open(os.path.join(self.dir, "lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            st = self.read()
            out = fn(st)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(st, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            return out


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie answers kill(0) but serves nothing.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def node_alive(st, ep):
    """A node is alive while its ephemeral registration stands: its process is running."""
    n = st["nodes"].get(ep)
    return bool(n) and pid_alive(n["pid"])


def replica_alive(st, r):
    return r["alive"] and node_alive(st, r["ep"])


def ns_leader(st):
    """The nameserver leader: the earliest-registered nameserver still alive (ZK election)."""
    ns = [(n["started"], ep) for ep, n in st["nodes"].items()
          if n["role"] == "nameserver" and node_alive(st, ep)]
    return min(ns)[1] if ns else None


def new_op(st, op_type, table, pid, status=None):
    st["next_op"] = st.get("next_op", 1)
    op = {"op_id": st["next_op"], "op_type": op_type, "db": table["db"], "name": table["name"],
          "pid": pid, "created": time.time()}
    if status:
        op["status"] = status
    st["next_op"] += 1
    st["ops"].append(op)
    return op


def op_status(op, now=None):
    if "status" in op:
        return op["status"]
    age = (now or time.time()) - op["created"]
    if age < OP_INITED_S:
        return "kInited"
    if age < OP_INITED_S + OP_DOING_S:
        return "kDoing"
    return "kDone"


def leader_of(part):
    for r in part["replicas"]:
        if r["leader"]:
            return r
    return None


def change_leader(st, table, part, to_ep):
    for r in part["replicas"]:
        r["leader"] = r["ep"] == to_ep
    new_op(st, "kChangeLeaderOP", table, part["pid"])


def table_status(st, t):
    """(Partition_unalive, Warnings) of a table as SHOW TABLE STATUS reports them."""
    unalive = 0
    warnings = []
    for part in t["partitions"]:
        unalive += sum(1 for r in part["replicas"] if not replica_alive(st, r))
        lead = leader_of(part)
        if lead is None or not replica_alive(st, lead):
            w = "pid %d: not connected to leader" % part["pid"]
            if w not in warnings:
                warnings.append(w)
        if len(part["replicas"]) != t["replicanum"]:
            w = "pid %d: real replica number %d does not match the configured replicanum %d" % (
                part["pid"], len(part["replicas"]), t["replicanum"])
            warnings.append(w)
    return unalive, "; ".join(warnings)


def tablet_down(st, ep):
    """The nameserver sees a tablet leave: its replicas go offline; with auto_failover on, the
    partitions it led move to an alive follower."""
    for t in st["tables"]:
        for part in t["partitions"]:
            mine = [r for r in part["replicas"] if r["ep"] == ep]
            if not mine:
                continue
            mine[0]["alive"] = False
            if mine[0]["leader"] and st["auto_failover"]:
                for r in part["replicas"]:
                    if r["ep"] != ep and replica_alive(st, r):
                        change_leader(st, t, part, r["ep"])
                        break


def tablet_up(st, ep):
    """A tablet comes back: with auto_failover on the nameserver recovers its replicas; with it
    off they stay offline (the tablet holds no data for them) until `recoverdata`."""
    if not st["auto_failover"]:
        return
    for t in st["tables"]:
        for part in t["partitions"]:
            for r in part["replicas"]:
                if r["ep"] == ep and not r["alive"]:
                    r["alive"] = True
                    new_op(st, "kRecoverTableOP", t, part["pid"])


def table_rows(rows):
    """A prettytable-like text table: the first row is the header."""
    widths = [max(len(str(r[i])) for r in rows) + 2 for i in range(len(rows[0]))]
    sep = "+" + "+".join("-" * w for w in widths) + "+"
    out = [sep]
    for n, r in enumerate(rows):
        out.append("|" + "|".join(str(c).center(w) for c, w in zip(r, widths)) + "|")
        if n == 0:
            out.append(sep)
    out.append(sep)
    return "\n".join(out)


def ns_table(header, rows):
    """ns_client's text table: header, a `------` line, then rows."""
    cols = [header] + rows
    widths = [max(len(str(r[i])) for r in cols) + 2 for i in range(len(header))]
    fmt = lambda r: "  " + "".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(header), "-" * (sum(widths) + 2)] + [fmt(r) for r in rows])


# --- the servers -------------------------------------------------------------------------------

def read_flags(path):
    flags = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--") and "=" in line:
                k, v = line[2:].split("=", 1)
                flags[k] = v
    return flags


def read_properties(path):
    props = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                props[k.strip()] = v.strip()
    return props


def serve(role, ep, zk, version):
    """Registers the node, answers brpc's /status and /version pages, deregisters on SIGTERM."""
    knobs = zk.read().get("knobs", {})
    if knobs.get("fail_start", {}).get(ep) == short_version(version):
        print("F%s %s: failed to load tables (knob fail_start)" % (time.strftime("%m%d %H:%M:%S"), role),
              flush=True)
        sys.exit(1)
    host, port = ep.rsplit(":", 1)

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/status": "OK\n", "/version": version.split("openmldb version ", 1)[-1] + "\n"}.get(
                self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write((body or "no such page\n").encode())

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        allow_reuse_address = True
        daemon_threads = True

    try:
        httpd = Server((host, int(port)), Pages)
    except OSError as e:
        print("E %s: fail to listen on %s: %s" % (role, ep, e), flush=True)
        sys.exit(1)

    def register(st):
        st["nodes"][ep] = {"role": role, "version": short_version(version), "pid": os.getpid(),
                           "started": time.time()}
        if role == "tablet":
            tablet_up(st, ep)

    zk.update(register)
    print("I %s %s started on %s" % (role, version, ep), flush=True)

    def stop(*_):
        def leave(st):
            if st["nodes"].get(ep, {}).get("pid") == os.getpid():
                if role == "tablet":
                    tablet_down(st, ep)
                del st["nodes"][ep]
        zk.update(leave)
        print("I %s on %s stopped" % (role, ep), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    while True:
        time.sleep(3600)


def taskmanager(opts):
    props = read_properties(opts["conf"])
    root = opts["taskmanager_root"]
    jars = [j for j in os.listdir(os.path.join(root, "lib")) if j.startswith("openmldb-taskmanager-")]
    if not jars:
        print("E taskmanager: no openmldb-taskmanager jar in %s/lib" % root, flush=True)
        sys.exit(1)
    version = jars[0][len("openmldb-taskmanager-"):-len(".jar")]
    spark = props.get("spark.home", "")
    if not os.path.isdir(os.path.join(spark, "jars")):
        print("E taskmanager: spark.home %s holds no Spark distribution (jars/)" % spark, flush=True)
        sys.exit(1)
    ep = "%s:%s" % (props["server.host"], props["server.port"])
    serve("taskmanager", ep, ZkStore(props["zookeeper.cluster"], props["zookeeper.root_path"]),
          "openmldb version " + version)


# --- ns_client ---------------------------------------------------------------------------------

def ns_client(opts):
    zk = ZkStore(opts.get("zk_cluster"), opts.get("zk_root_path"))
    if not zk.exists():
        print("zk client init failed: no ZooKeeper at %s" % opts.get("zk_cluster"), file=sys.stderr)
        return 1
    st = zk.read()
    if ns_leader(st) is None:
        print("fail to get nameserver leader from %s" % opts.get("zk_cluster"), file=sys.stderr)
        return 1
    cmd = (opts.get("cmd") or "").split()
    if cmd == ["confget", "auto_failover"]:
        print(ns_table(["key", "value"], [["auto_failover", str(st["auto_failover"]).lower()]]))
    elif cmd[:2] == ["confset", "auto_failover"] and len(cmd) == 3 and cmd[2] in ("true", "false"):
        def put(s):
            s["auto_failover"] = cmd[2] == "true"
        zk.update(put)
        print("set auto_failover ok")
    elif cmd == ["showns"]:
        lead = ns_leader(st)
        rows = [[ep, "leader" if ep == lead else "standby"]
                for ep, n in sorted(st["nodes"].items()) if n["role"] == "nameserver" and node_alive(st, ep)]
        print(ns_table(["endpoint", "role"], rows))
    elif cmd == ["showtablet"]:
        rows = [[ep, "kHealthy" if node_alive(st, ep) else "kOffline"] for ep in st["tablets"]]
        print(ns_table(["endpoint", "state"], rows))
    elif cmd and cmd[0] == "showtable":
        rows = []
        for t in st["tables"]:
            if len(cmd) > 1 and t["name"] != cmd[1]:
                continue
            for part in t["partitions"]:
                for r in part["replicas"]:
                    rows.append([t["name"], t["tid"], part["pid"], r["ep"],
                                 "leader" if r["leader"] else "follower",
                                 "yes" if replica_alive(st, r) else "no"])
        print(ns_table(["name", "tid", "pid", "endpoint", "role", "is_alive"], rows))
    else:
        print("unsupported cmd %s" % opts.get("cmd"), file=sys.stderr)
        return 1
    return 0


def parse_args(argv):
    opts = {}
    for a in argv:
        if a.startswith("--"):
            k, _, v = a[2:].partition("=")
            opts[k] = v
    return opts


def main(argv):
    opts = parse_args(argv)
    if "version" in opts:
        print(BANNER)
        return 0
    if "flagfile" in opts:
        flags = read_flags(opts["flagfile"])
        serve(flags["role"], flags["endpoint"], ZkStore(flags["zk_cluster"], flags["zk_root_path"]), BANNER)
    if opts.get("role") == "taskmanager":
        taskmanager(opts)
    if opts.get("role") == "ns_client":
        return ns_client(opts)
    print("usage: openmldb --version | --flagfile=FILE | --role=ns_client --cmd=...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
