#!/usr/bin/env python3
# The OpenMLDB double's `bin/openmldb`: one program with roles, as the real binary has.
#
#   bin/openmldb --version                                    prints BANNER
#   bin/openmldb --flagfile=./conf/<c>.flags ...              a server (tablet, nameserver, apiserver)
#   bin/openmldb --role=taskmanager --conf=... --taskmanager_root=...   the TaskManager stand-in
#   bin/openmldb --role=ns_client --zk_cluster=.. --zk_root_path=.. --interactive=false --cmd="..."
#   bin/openmldb --role=sql_client --zk_cluster=.. --zk_root_path=.. --cmd="show table status like '%';"
#   bin/openmldb --role=client --endpoint=TABLET --cmd="gettablestatus"
#
# lab/openmldb/README.md lists the behaviours it models. The cluster metadata that ZooKeeper holds
# for the real product lives in a directory per `--zk_cluster` and `--zk_root_path` (ZkStore);
# tools/openmldb_ops.py (the double of the ops tool) loads this file as a library.
import http.server
import os
import re
import signal
import socketserver
import sys
import threading
import time

# The labs' shared mechanics (lab/labkit.py), found where lab.py laid this binary out from.
sys.dont_write_bytecode = True
sys.path.insert(0, "@LABKIT@")
from labkit import JsonState, pid_alive  # noqa: E402

BANNER = "openmldb version @VERSION@"

# Where the lab's "ZooKeeper" keeps its data: one directory per zk_cluster and root path.
ZK_BASE = "/tmp/capstan-openmldb-zk"

# Time an op spends in kInited and then kDoing before it is kDone (the real ones take as long as
# the data takes to move; the double keeps them short so tests stay fast).
OP_INITED_S = 0.1
OP_DOING_S = 0.4

# How long a server takes to exit after SIGTERM (closing its port first).
EXIT_DELAY_S = 1.0


def short_version(banner=BANNER):
    """`0.9.2` from `openmldb version 0.9.2-<commit>`."""
    v = banner.split("openmldb version ", 1)[-1].strip()
    return v.split("-", 1)[0]


class ZkStore(JsonState):
    """The cluster metadata under one zk_cluster + zk_root_path, as a JSON file with a lock."""

    def __init__(self, zk_cluster, root_path):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", zk_cluster or "")
        self._at(os.path.join(ZK_BASE, safe + (root_path or "/").replace("/", "_")))

    def _at(self, d):
        self.dir = d
        JsonState.__init__(self, os.path.join(d, "state.json"), os.path.join(d, "lock"))
        return self

    @classmethod
    def in_dir(cls, d):
        """The store kept in directory `d` of ZK_BASE."""
        return cls.__new__(cls)._at(d)


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


def replica_state(st, r):
    """The partition's state on its tablet (`gettablestatus`), or None when the tablet does not
    hold it: the tablet is down, or restarted without loading it (auto_failover off)."""
    if not node_alive(st, r["ep"]):
        return None
    if not r["alive"] and "state" not in r:
        return None
    return r.get("state", "kTableNormal")


def table_status(st, t):
    """(Partition_unalive, Warnings) of a table as SHOW TABLE STATUS reports them. A warning is
    `[pid=N][leader|follower][ENDPOINT]: MESSAGE`; several are joined by newlines, as the real
    server joins them (PRODUCTS.md §1.3, docs/en/openmldb_sql/ddl/SHOW_TABLE_STATUS.md)."""
    unalive = 0
    warnings = []
    for part in t["partitions"]:
        lead = leader_of(part)
        lead_ok = lead is not None and replica_alive(st, lead)
        for r in part["replicas"]:
            role = "leader" if r["leader"] else "follower"
            tag = "[pid=%d][%s][%s]: " % (part["pid"], role, r["ep"])
            if not replica_alive(st, r):
                unalive += 1
            state = replica_state(st, r)
            if state is None:
                warnings.append(tag + "state is kNotFound")
            elif state != "kTableNormal":
                warnings.append(tag + "state is %s" % state)
            elif not r["leader"] and (not lead_ok or not r["alive"]):
                warnings.append(tag + "not connected to leader")
        if len(part["replicas"]) != t["replicanum"]:
            ep = lead["ep"] if lead else "-"
            warnings.append("[pid=%d][leader][%s]: real replica number %d does not match the "
                            "configured replicanum %d" % (part["pid"], ep, len(part["replicas"]),
                                                          t["replicanum"]))
    return unalive, "\n".join(warnings)


def tablet_down(st, ep):
    """The nameserver sees a tablet leave: its replicas go offline; with auto_failover on, the
    partitions it led move to an alive follower."""
    for t in st["tables"]:
        for part in t["partitions"]:
            mine = [r for r in part["replicas"] if r["ep"] == ep]
            if not mine:
                continue
            mine[0]["alive"] = False
            # The tablet's in-memory state goes with it: a restart loads the partition afresh.
            mine[0].pop("state", None)
            mine[0].pop("stuck", None)
            if mine[0]["leader"] and st["auto_failover"]:
                for r in part["replicas"]:
                    if r["ep"] != ep and replica_alive(st, r):
                        change_leader(st, t, part, r["ep"])
                        break


def tablet_up(st, ep, version=None):
    """A tablet comes back: with auto_failover on the nameserver recovers its replicas; with it
    off they stay offline (the tablet holds no data for them) until `recoverdata`. Knob `stuck`
    keeps one partition of this tablet from coming back (`unalive`) or leaves it unloaded
    (`kTableUndefined`) when the given version starts."""
    if st["auto_failover"]:
        for t in st["tables"]:
            for part in t["partitions"]:
                for r in part["replicas"]:
                    if r["ep"] == ep and not r["alive"]:
                        r["alive"] = True
                        new_op(st, "kRecoverTableOP", t, part["pid"])
    knob = st.get("knobs", {}).get("stuck", {}).get(ep)
    if knob and version == knob.get("version"):
        for t in st["tables"]:
            if "%s.%s" % (t["db"], t["name"]) != knob["table"]:
                continue
            for r in t["partitions"][knob["pid"]]["replicas"]:
                if r["ep"] == ep:
                    r["stuck"] = True
                    if knob.get("state", "unalive") == "unalive":
                        r["alive"] = False
                        r.pop("state", None)
                    else:
                        r["state"] = knob["state"]


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
            tablet_up(st, ep, short_version(version))

    zk.update(register)
    print("I %s %s started on %s" % (role, version, ep), flush=True)

    def stop(*_):
        def leave(st):
            if st["nodes"].get(ep, {}).get("pid") == os.getpid():
                if role == "tablet":
                    tablet_down(st, ep)
                del st["nodes"][ep]
        zk.update(leave)
        print("I %s on %s stopping" % (role, ep), flush=True)
        # A real server flushes before it exits, still holding its port: the process outlives
        # the SIGTERM by a moment. start.sh's stop waits 3 s; in mon mode it does not wait for
        # the component at all (PRODUCTS.md §1.2), so a caller must.
        time.sleep(EXIT_DELAY_S)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    # Knob `die_after`: this version serves (start.sh sees /status answer and prints success),
    # then the process dies a few seconds later without deregistering, as a crash does.
    die = knobs.get("die_after", {}).get(ep)
    if die and die.get("version") == short_version(version):
        def crash():
            print("F%s %s: crashed (knob die_after)" % (time.strftime("%m%d %H:%M:%S"), role), flush=True)
            os._exit(134)
        threading.Timer(float(die.get("seconds", 3)), crash).start()
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


# --- the clients --------------------------------------------------------------------------------

# The databases the real tools add to `showdb`'s list: they hold system tables.
INTERNAL_DBS = ["__INTERNAL_DB", "__PRE_AGG_DB", "INFORMATION_SCHEMA"]


def store_of_endpoint(ep):
    """The store a `--endpoint=NS` client reaches: the cluster whose live nameserver is EP."""
    if not os.path.isdir(ZK_BASE):
        return None
    for d in sorted(os.listdir(ZK_BASE)):
        zk = ZkStore.in_dir(os.path.join(ZK_BASE, d))
        if zk.exists():
            st = zk.read()
            n = st["nodes"].get(ep)
            if n and n["role"] == "nameserver" and node_alive(st, ep):
                return zk
    return None


def connect_ns(opts):
    """The store a client with `--zk_cluster` + `--zk_root_path` or `--endpoint` reaches, or an
    error text (the real client prints it and gets nowhere)."""
    if opts.get("zk_cluster"):
        zk = ZkStore(opts.get("zk_cluster"), opts.get("zk_root_path"))
        if not zk.exists():
            return None, "zk client init failed: no ZooKeeper at %s" % opts.get("zk_cluster")
        if ns_leader(zk.read()) is None:
            return None, "fail to get nameserver leader from %s" % opts.get("zk_cluster")
        return zk, None
    zk = store_of_endpoint(opts.get("endpoint", ""))
    if zk is None:
        return None, "fail to connect nameserver %s" % opts.get("endpoint", "")
    return zk, None


def text_table(header, rows):
    """The SQL client's result table (hybridse TextTable): a rule of dash groups, the header, a
    rule, the rows, a rule; every cell left-aligned in a column one wider than its widest entry.
    A cell holding newlines is printed as it is: its later lines start at the line's beginning
    (so a multi-line Warnings cell spreads over several lines)."""
    widths = []
    for i, h in enumerate(header):
        cells = [h] + [str(r[i]).split("\n")[0] for r in rows]
        widths.append(max(len(c) for c in cells) + 2)
    rule = " " + " ".join("-" * w for w in widths)
    def line(cells):
        return " " + " ".join((" " + str(c)).ljust(w) for c, w in zip(cells, widths))
    out = [rule, line(header), rule]
    for r in rows:
        out.append(line(r))
    out.append(rule)
    return "\n".join(out)


def table_status_rows(st, pattern):
    """SHOW TABLE STATUS LIKE pattern: every table whose database matches (`%` is any run,
    `_` any character), with its real columns (Warnings may hold several lines)."""
    import fnmatch
    glob = pattern.replace("*", "[*]").replace("?", "[?]").replace("%", "*").replace("_", "?")
    rows = []
    for t in st["tables"]:
        if not fnmatch.fnmatchcase(t["db"], glob):
            continue
        unalive, warnings = table_status(st, t)
        rows.append([t["tid"], t["name"], t["db"], t.get("storage", "memory"), t.get("rows", 0),
                     t.get("rows", 0) * 100, 0, len(t["partitions"]), unalive, t["replicanum"],
                     "NULL", "NULL", "NULL", warnings])
    return rows


STATUS_HEADER = ["Table_id", "Table_name", "Database_name", "Storage_type", "Rows",
                 "Memory_data_size", "Disk_data_size", "Partition", "Partition_unalive", "Replica",
                 "Offline_path", "Offline_format", "Offline_symbolic_paths", "Warnings"]


def sql_client(opts):
    """`--role=sql_client --cmd="SQL;"`: only `show table status [like 'P'];` is modelled."""
    zk, err = connect_ns(opts)
    if err:
        print(err, file=sys.stderr)
        return 1
    sql = (opts.get("cmd") or "").strip()
    m = re.match(r"(?is)^show\s+table\s+status(?:\s+like\s+'([^']*)')?\s*;?\s*$", sql)
    if not m:
        print("Error: [2000] Syntax error or unsupported statement: %s" % sql)
        return 0
    st = zk.read()
    print(text_table(STATUS_HEADER, table_status_rows(st, m.group(1) or "%")))
    return 0


def tablet_client(opts):
    """`--role=client --endpoint=TABLET --cmd="gettablestatus [tid pid]"`: the partitions the
    tablet holds, from the tablet itself (display.h's columns)."""
    ep = opts.get("endpoint", "")
    cmd = (opts.get("cmd") or "").split()
    zk = None
    for d in (sorted(os.listdir(ZK_BASE)) if os.path.isdir(ZK_BASE) else []):
        cand = ZkStore.in_dir(os.path.join(ZK_BASE, d))
        if cand.exists() and node_alive(cand.read(), ep):
            zk = cand
            break
    if zk is None:
        print("Fail to get table status. error msg: connect to %s failed" % ep)
        return 0
    if not cmd or cmd[0] != "gettablestatus":
        print("unsupported cmd %s" % opts.get("cmd"), file=sys.stderr)
        return 1
    st = zk.read()
    rows = []
    for t in st["tables"]:
        for part in t["partitions"]:
            if len(cmd) == 3 and (str(t["tid"]) != cmd[1] or str(part["pid"]) != cmd[2]):
                continue
            for r in part["replicas"]:
                state = replica_state(st, r) if r["ep"] == ep else None
                if state is None:
                    continue
                rows.append([t["tid"], part["pid"], t.get("rows", 0),
                             "kTableLeader" if r["leader"] else "kTableFollower", state, "true",
                             "0min", "0s", t.get("rows", 0) * 100, "kNoCompress", 1, "kMemory"])
    print(ns_table(["tid", "pid", "offset", "mode", "state", "enable_expire", "ttl", "ttl_offset",
                    "memused", "compress_type", "skiplist_height", "storage_mode"], rows))
    return 0


def age(n):
    s = max(0, int(time.time() - n["started"]))
    return "%dh%dm" % (s // 3600, s // 60 % 60) if s >= 3600 else "%dm%ds" % (s // 60, s % 60)


def ns_client(opts):
    zk, err = connect_ns(opts)
    if err:
        print(err, file=sys.stderr)
        return 1
    st = zk.read()
    cmd = (opts.get("cmd") or "").split()
    db = opts.get("database", "")
    if cmd == ["confget", "auto_failover"]:
        print(ns_table(["key", "value"], [["auto_failover", str(st["auto_failover"]).lower()]]))
    elif cmd[:2] == ["confset", "auto_failover"]:
        if len(cmd) != 3 or cmd[2] not in ("true", "false"):
            print("failed to set auto_failover. error msg: invalid value %s" % " ".join(cmd[2:]))
            return 0
        def put(s):
            s["auto_failover"] = cmd[2] == "true"
        zk.update(put)
        print("set auto_failover ok")
    elif cmd == ["showns"]:
        lead = ns_leader(st)
        rows = [[ep, "-", "leader" if ep == lead else "standby"]
                for ep, n in sorted(st["nodes"].items()) if n["role"] == "nameserver" and node_alive(st, ep)]
        print(ns_table(["endpoint", "real_endpoint", "role"], rows))
    elif cmd == ["showtablet"]:
        rows = []
        for ep in st["tablets"]:
            n = st["nodes"].get(ep)
            up = node_alive(st, ep)
            rows.append([ep, "-", "kHealthy" if up else "kOffline", age(n) if up else "-"])
        print(ns_table(["endpoint", "real_endpoint", "state", "age"], rows))
    elif cmd == ["showdb"]:
        dbs = sorted({t["db"] for t in st["tables"]})
        print(ns_table(["#", "name"], [[i + 1, d] for i, d in enumerate(dbs)]))
    elif cmd and cmd[0] == "showtable":
        rows = []
        for t in st["tables"]:
            if t["db"] != db or (len(cmd) > 1 and t["name"] != cmd[1]):
                continue
            for part in t["partitions"]:
                for r in part["replicas"]:
                    rows.append([t["name"], t["tid"], part["pid"], r["ep"],
                                 "leader" if r["leader"] else "follower",
                                 "yes" if replica_alive(st, r) else "no", t.get("rows", 0),
                                 t.get("rows", 0), "%.3f" % (t.get("rows", 0) / 10.0), "0.000"])
        print(ns_table(["name", "tid", "pid", "endpoint", "role", "is_alive", "offset",
                        "record_cnt", "memused", "diskused"], rows))
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
    if opts.get("role") == "sql_client":
        return sql_client(opts)
    if opts.get("role") == "client":
        return tablet_client(opts)
    print("usage: openmldb --version | --flagfile=FILE | --role=ns_client --cmd=...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
