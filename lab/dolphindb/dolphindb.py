#!/usr/bin/env python3
# The DolphinDB double's `server/dolphindb`: one program for every node mode, as the real binary.
#
#   dolphindb -version                                   prints VERSION
#   dolphindb -console 0 -mode controller -home data -config config/controller.cfg
#             -logFile log/controller.log -nodesFile config/cluster.nodes -clusterConfig config/cluster.cfg
#   dolphindb -console 0 -mode agent -home data -config config/agent.cfg -logFile log/agent.log
#   dolphindb -console 0 -mode datanode -localSite HOST:PORT:ALIAS -home data -logFile log/ALIAS.log
#             (started by the agent of its machine when the leader controller runs startDataNode)
#
# Every node serves DolphinDB's API protocol (shared/notes/dolphindb-protocol.md) on its port: the
# real `dolphindb` Rust crate talks to it. The nodes share the cluster's state (nodes, Raft leader,
# chunks and their replicas, the rows the write probe inserts) in one JSON file behind a lock, as
# the controllers' Raft group and the data nodes' chunk metadata would hold it. It answers the
# scripts capstan's stdlib sends (lab/dolphindb/README.md lists them) and errors on anything else.
import os
import re
import signal
import socketserver
import struct
import subprocess
import sys
import threading
import time

VERSION = "@VERSION@"
STATE = "@STATE@"

# The labs' shared mechanics (lab/labkit.py), found where lab.py laid this binary out from.
sys.dont_write_bytecode = True
sys.path.insert(0, "@LABKIT@")
from labkit import JsonState, pid_alive  # noqa: E402

MODES = {"datanode": 0, "agent": 1, "controller": 2}


# ---------------------------------------------------------------------------------------------
# Shared state


STORE = JsonState(STATE, STATE + ".lock")


def read_state():
    return STORE.read()


def update(fn):
    """Runs fn(state) under the lock and writes the state back; returns fn's value."""
    return STORE.update(fn)


def alive(st, alias):
    n = st["nodes"].get(alias)
    return bool(n) and n.get("serving", False) and pid_alive(n.get("pid"))


def of_mode(st, mode):
    return [a for a in st["order"] if st["nodes"][a]["mode"] == mode]


def leader(st):
    """The Raft leader: the one recorded while it lives, else the first live controller when a
    majority of the controllers lives (an election), else none."""
    ctls = of_mode(st, "controller")
    cur = st.get("leader")
    if cur and alive(st, cur):
        return cur
    live = [c for c in ctls if alive(st, c)]
    if len(live) * 2 > len(ctls):
        st["leader"] = live[0]
        return live[0]
    return None


def chunk_state(c, now):
    return "RECOVERING" if now < c.get("recovering_until", 0) else "COMPLETE"


def live_replica(st, c, alias, now):
    """A replica serves reads and writes while its node lives and, once that node restarted, only
    when it has caught up (the chunk is COMPLETE again): a recovering replica does not count."""
    if not alive(st, alias):
        return False
    return not (c.get("recovering_on") == alias and chunk_state(c, now) != "COMPLETE")


# ---------------------------------------------------------------------------------------------
# The protocol (little-endian; see shared/notes/dolphindb-protocol.md)

T_VOID, T_BOOL, T_INT, T_LONG, T_STRING = 0, 1, 4, 5, 18
T_TIMESTAMP, T_SYMBOL, T_ANY, T_DICT = 12, 17, 25, 27
# Fixed-width types a client may send: bytes per value.
WIDTH = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 4, 7: 4, 8: 4, 9: 4, 10: 4, 11: 4, 12: 8, 13: 8, 14: 8,
         15: 4, 16: 8, 28: 4}


class DdbError(Exception):
    pass


# Reading the objects a client sends as a `function` frame's arguments (or a `variable` upload):
# the frame's length counts only its text, so the objects are parsed to find where it ends.
def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError
    return b


def read_cstr(f):
    out = bytearray()
    while True:
        c = read_exact(f, 1)
        if c == b"\0":
            return out.decode(errors="replace")
        out += c


def read_values(f, t, n):
    if t in (T_STRING, T_SYMBOL):
        return [read_cstr(f) for _ in range(n)]
    if t not in WIDTH:
        raise DdbError("The lab double cannot read an argument of type %d." % t)
    w = WIDTH[t]
    raw = read_exact(f, w * n)
    code = {1: "b", 2: "b", 3: "h", 4: "i", 8: "q"}[w]
    if t in (15,):
        code = "f"
    if t in (16,):
        code = "d"
    return list(struct.unpack("<%d%s" % (n, code), raw))


def read_object(f):
    """One serialized object (little-endian), as (form, type, value): a scalar's value, a
    vector's list, a table's [(name, type, values)]."""
    t, form = struct.unpack("<BB", read_exact(f, 2))
    if form == 0:
        if t == T_VOID:
            read_exact(f, 1)
            return (0, t, None)
        return (0, t, read_values(f, t, 1)[0])
    if form == 1:
        rows, _cols = struct.unpack("<ii", read_exact(f, 8))
        if t == 128 + T_SYMBOL:
            _base_id, base_size = struct.unpack("<ii", read_exact(f, 8))
            base = [read_cstr(f) for _ in range(base_size)]
            idx = struct.unpack("<%di" % rows, read_exact(f, 4 * rows))
            return (1, T_SYMBOL, [base[i] if 0 <= i < len(base) else "" for i in idx])
        return (1, t, read_values(f, t, rows))
    if form == 6:
        rows, ncols = struct.unpack("<ii", read_exact(f, 8))
        read_cstr(f)
        names = [read_cstr(f) for _ in range(ncols)]
        cols = []
        for name in names:
            _, ct, values = read_object(f)
            cols.append((name, ct, values))
        return (6, t, cols)
    raise DdbError("The lab double cannot read an argument of form %d." % form)


def enc_str(s):
    return s.encode() + b"\0"


def scalar(t, v):
    head = struct.pack("<BB", t, 0)
    if t == T_STRING:
        return head + enc_str(v)
    if t == T_INT:
        return head + struct.pack("<i", v)
    if t == T_LONG:
        return head + struct.pack("<q", v)
    if t == T_BOOL:
        return head + struct.pack("<B", 1 if v else 0)
    raise ValueError(t)


def vector(t, values):
    out = struct.pack("<BBii", t, 1, len(values), 1)
    for v in values:
        if t in (T_STRING, T_SYMBOL):
            out += enc_str(v)
        elif t == T_BOOL:
            out += struct.pack("<B", 1 if v else 0)
        elif t == T_INT:
            out += struct.pack("<i", v)
        elif t == T_LONG:
            out += struct.pack("<q", v)
    return out


def dictionary(keys, values):
    """A STRING-keyed dictionary of already-serialized values (an ANY vector of them)."""
    out = struct.pack("<BB", T_ANY, 5)
    out += vector(T_STRING, keys)
    out += struct.pack("<BBii", T_ANY, 1, len(values), 1) + b"".join(values)
    return out


def table(cols):
    """cols: [(name, type, values)]"""
    rows = len(cols[0][2]) if cols else 0
    out = struct.pack("<BBii", 27, 6, rows, len(cols)) + b"\0"
    for name, _, _ in cols:
        out += enc_str(name)
    for _, t, values in cols:
        out += vector(t, values)
    return out


# A graceful shutdown takes no new request and lets the ones being answered finish: a client
# whose request was applied also gets its reply (otherwise an HA client sends it again to
# another node, and the row is written twice).
SHUTDOWN = threading.Lock()
SHUTTING = threading.Event()
INFLIGHT = [0]


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        node = self.server.node
        f = self.request.makefile("rb")
        sid = str(int(time.time() * 1000) % 4000000000)
        while True:
            line = f.readline()
            if not line:
                return
            parts = line.decode(errors="replace").split()
            if len(parts) < 3:
                return
            n = int(parts[2])
            payload = f.read(n).decode(errors="replace")
            with SHUTDOWN:
                if SHUTTING.is_set():
                    return
                INFLIGHT[0] += 1
            try:
                if not self.serve(node, f, sid, payload):
                    return
            finally:
                with SHUTDOWN:
                    INFLIGHT[0] -= 1

    def serve(self, node, f, sid, payload):
        """Answers one request; False when the connection is to be closed."""
        cmd, _, rest = payload.partition("\n")
        if cmd == "connect":
            fields = rest.split("\n")
            if fields and fields[0] == "login":
                user, pwd = fields[1], fields[2]
                creds = read_state().get("users", {})
                if creds.get(user) != pwd:
                    self.reply(sid, err="The user name or password is incorrect.")
                    return True
            self.reply(sid)
        elif cmd == "script":
            try:
                self.reply(sid, obj=node.answer(rest))
            except DdbError as e:
                self.reply(sid, err=str(e))
        elif cmd in ("function", "variable"):
            # LEN counts the text only: the arguments (or uploaded values) follow as objects,
            # read here so that the next request is found.
            fields = rest.split("\n")
            try:
                count = int(fields[1]) if len(fields) > 1 else 0
                args = [read_object(f) for _ in range(count)]
            except EOFError:
                return False
            except DdbError as e:
                # Not followable past an object the double cannot read: as a real server that
                # drops a malformed request.
                self.reply(sid, err=str(e))
                return False
            try:
                if cmd == "variable":
                    raise DdbError("The lab double does not keep uploaded variables.")
                self.reply(sid, obj=node.call(fields[0], args))
            except DdbError as e:
                self.reply(sid, err=str(e))
        else:
            self.reply(sid, err="Unknown request type %s." % cmd)
        return True

    def reply(self, sid, obj=None, err=None):
        if err is not None:
            data = ("%s 0 1\n%s\n" % (sid, err.replace("\n", " "))).encode()
        elif obj is None:
            data = ("%s 0 1\nOK\n" % sid).encode()
        else:
            data = ("%s 1 1\nOK\n" % sid).encode() + obj
        self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    # SO_REUSEADDR: a node restarted at once binds its port again. (The real server can log
    # "Failed to bind the socket ... error code 98" for ~30 s; the `no_return` knob plays that.)
    allow_reuse_address = True
    daemon_threads = True


# ---------------------------------------------------------------------------------------------
# The scripts a node answers (normalised: whitespace collapsed)

RE_CONFIG = re.compile(r"^getConfig\(`(\w+)\)$")
RE_START = re.compile(r"^startDataNode\(\[?((?:\"\w+\",? ?)+)\]?\)$")
RE_INSERT = re.compile(r'^tableInsert\(loadTable\("([^"]+)", "(\w+)"\), now\(\), "(\w+)", (\d+)\)$')
RE_IDS = re.compile(r'^exec id from loadTable\("([^"]+)", "(\w+)"\)$')
RE_TABLE_INSERT = re.compile(r'^tableInsert\{loadTable\([\'"]([^\'"]+)[\'"], ?[\'"](\w+)[\'"]\)\}$')
RE_EXISTS_DB = re.compile(r'^existsDatabase\("(dfs://[^"]+)"\)$')
RE_DROP_DB = re.compile(r'^dropDatabase\("(dfs://[^"]+)"\)$')
RE_CREATE = re.compile(r'^db = database\("(dfs://[^"]+)", HASH, \[INT, \d+\]\); db\.createPartitionedTable\(table\(1:0, `time`name`id, \[TIMESTAMP, SYMBOL, INT\]\), "(\w+)", "id"\)$')
RE_LAG = re.compile(r'^exec long\(now\(\)\) - long\(max\(time\)\) from loadTable\("([^"]+)", "(\w+)"\)$')
RE_SCHEMA = re.compile(r'^schema\(loadTable\([\'"]([^\'"]+)[\'"], ?[\'"](\w+)[\'"]\)\)$')

CHUNKS = 'select string(chunkId) as chunkId, file, state from rpc(getControllerAlias(), getClusterChunksStatus) where state != "COMPLETE"'
MARKER = "exec sum(version) from rpc(getControllerAlias(), getClusterChunksStatus)"
PERF = "select name, mode, int(state) as state from rpc(getControllerAlias(), getClusterPerf, true)"
HA_PERF = "rpc(getControllerAlias(), getClusterPerf)"
RE_PERF_WHERE = re.compile(re.escape(PERF) + r" where name in \[((?:\"\w+\",? ?)*)\]$")


class Node:
    def __init__(self, mode, alias, port, home):
        self.mode, self.alias, self.port, self.home = mode, alias, port, home

    def need_leader(self, st):
        ld = leader(st)
        if ld is None:
            raise DdbError("<UnknownLeader> The Raft group has no leader: fewer than a majority of the controllers are up.")
        return ld

    def call(self, name, args):
        """A `function` frame: the function's name (a partial application such as
        `tableInsert{loadTable("dfs://db", "t")}` included) and its parsed arguments."""
        n = " ".join(name.split())
        if n == "isNodeInitialized" and not args:
            return scalar(T_BOOL, True)
        m = RE_TABLE_INSERT.match(n)
        if m and len(args) == 1 and args[0][0] == 6:
            return self.insert_rows("%s/%s" % (m.group(1), m.group(2)), args[0][2])
        # As a server answers a function it does not have (getRequiredAPIVersion is newer than
        # the releases the lab plays): an error, and the session goes on.
        raise DdbError("Syntax Error: [line #1] Cannot recognize the token %s" % n.split("{")[0])

    def insert_rows(self, key, cols):
        if self.mode != "datanode":
            raise DdbError("loadTable: only data nodes serve DFS tables.")
        ids = next((v for name, _, v in cols if name == "id"), None)
        times = next((v for name, t, v in cols if name == "time" and t == T_TIMESTAMP), None)
        if ids is None:
            raise DdbError("tableInsert: the table has no column id.")
        if times is None:
            times = [int(time.time() * 1000)] * len(ids)

        def insert(st):
            if key not in st["tables"]:
                raise DdbError("loadTable: table %s does not exist." % key)
            now = time.time()
            for ident in ids:
                c = st["chunks"][int(ident) % len(st["chunks"])]
                if not any(live_replica(st, c, r, now) for r in c["replicas"]):
                    raise DdbError("The chunk %s has no available replica." % c["id"])
            for ident, at in zip(ids, times):
                st["chunks"][int(ident) % len(st["chunks"])]["version"] += 1
                st["tables"][key].append(int(ident))
                st.setdefault("times", {}).setdefault(key, []).append(int(at))
        update(insert)
        return scalar(T_INT, len(ids))

    def answer(self, script):
        s = " ".join(script.split())
        now = time.time()
        if s == "version()":
            return scalar(T_STRING, VERSION)
        if s == "getNodeAlias()":
            return scalar(T_STRING, self.alias)
        m = RE_CONFIG.match(s)
        if m:
            st = read_state()
            key = m.group(1)
            cfg = dict(st["config"])
            cfg.update(st["nodes"][self.alias].get("config", {}))
            if key not in cfg:
                raise DdbError("getConfig: the configuration parameter %s is not set on %s." % (key, self.alias))
            return scalar(T_STRING, cfg[key])
        if s == "getActiveMaster()":
            return scalar(T_STRING, update(self.need_leader))
        if s in ("pnodeRun(version)", "pnodeRun(getConfig{`chunkMetaDir})"):
            st = read_state()
            names, values = [], []
            for a in of_mode(st, "datanode"):
                if not alive(st, a):
                    raise DdbError("<DataNodeNotAvail>The data node %s is not available." % a)
                names.append(a)
                n = st["nodes"][a]
                values.append(n["version"] if s == "pnodeRun(version)" else n["config"]["chunkMetaDir"])
            return table([("node", T_STRING, names), ("value", T_STRING, values)])
        if s == CHUNKS:
            st = read_state()
            update(self.need_leader)
            bad = [c for c in st["chunks"] if chunk_state(c, now) != "COMPLETE"]
            return table([
                ("chunkId", T_STRING, [c["id"] for c in bad]),
                ("file", T_STRING, [c["file"] for c in bad]),
                ("state", T_STRING, [chunk_state(c, now) for c in bad]),
            ])
        if s == MARKER:
            update(self.need_leader)
            return scalar(T_LONG, sum(c["version"] for c in read_state()["chunks"]))
        if s == HA_PERF:
            # What an HA client (the vendor's C++/Python API) reads to pick a data node: host,
            # port, mode and the load columns (getClusterPerf's layout, PRODUCTS.md §2.3).
            st = read_state()
            update(self.need_leader)
            names = list(st["order"])
            nodes = [st["nodes"][a] for a in names]
            live = [alive(st, a) for a in names]
            return table([
                ("name", T_STRING, names),
                ("state", T_BOOL, live),
                ("host", T_STRING, [n["host"] for n in nodes]),
                ("port", T_INT, [n["port"] for n in nodes]),
                ("site", T_STRING, ["%s:%d:%s" % (n["host"], n["port"], a) for a, n in zip(names, nodes)]),
                ("mode", T_INT, [MODES[n["mode"]] for n in nodes]),
                ("maxConnections", T_INT, [512] * len(names)),
                ("connectionNum", T_INT, [1 if x else 0 for x in live]),
                ("workerNum", T_INT, [4] * len(names)),
                ("executorNum", T_INT, [3] * len(names)),
                ("publicName", T_STRING, [n["host"] for n in nodes]),
            ])
        m = RE_SCHEMA.match(s)
        if m:
            key = "%s/%s" % (m.group(1), m.group(2))
            if self.mode != "datanode":
                raise DdbError("loadTable: only data nodes serve DFS tables.")
            if key not in read_state()["tables"]:
                raise DdbError("loadTable: table %s does not exist." % key)
            # The lab's tables are the seed's: time TIMESTAMP, name SYMBOL, id INT.
            null_int = -2147483648
            col_defs = table([
                ("name", T_STRING, ["time", "name", "id"]),
                ("typeString", T_STRING, ["TIMESTAMP", "SYMBOL", "INT"]),
                ("typeInt", T_INT, [T_TIMESTAMP, T_SYMBOL, T_INT]),
                ("extra", T_INT, [null_int] * 3),
                ("comment", T_STRING, ["", "", ""]),
            ])
            return dictionary(["colDefs", "partitionColumnName", "engineType"],
                              [col_defs, scalar(T_STRING, "time"), scalar(T_STRING, "TSDB")])
        m = RE_PERF_WHERE.match(s) if s.startswith(PERF + " where") else None
        if s == PERF or m:
            st = read_state()
            update(self.need_leader)
            names = list(st["order"])
            if m:
                # `where name in [..]`: the rows of those names, in the table's order.
                wanted = set(re.findall(r'"(\w+)"', m.group(1)))
                names = [a for a in names if a in wanted]
            return table([
                ("name", T_STRING, names),
                ("mode", T_INT, [MODES[st["nodes"][a]["mode"]] for a in names]),
                ("state", T_INT, [1 if alive(st, a) else 0 for a in names]),
            ])
        m = RE_START.match(s)
        if m:
            aliases = re.findall(r'"(\w+)"', m.group(1))
            if self.mode != "controller":
                raise DdbError("startDataNode only runs on a controller.")

            def start(st):
                ld = self.need_leader(st)
                if ld != self.alias:
                    n = st["nodes"][ld]
                    raise DdbError("<NotLeader>%s:%d" % (n["host"], n["port"]))
                for a in aliases:
                    n = st["nodes"].get(a)
                    if not n or n["mode"] != "datanode":
                        raise DdbError("startDataNode: %s is not a data node." % a)
                    agent = [x for x in of_mode(st, "agent") if st["nodes"][x]["machine"] == n["machine"]]
                    if not agent or not alive(st, agent[0]):
                        raise DdbError("startDataNode: the agent of %s is not available." % a)
                    if not alive(st, a) and a not in st["start_requests"]:
                        st["start_requests"].append(a)
            update(start)
            return None
        m = RE_INSERT.match(s)
        if m:
            # tableInsert(loadTable(..), now(), NAME, ID): one row, written now.
            return self.insert_rows("%s/%s" % (m.group(1), m.group(2)),
                                    [("id", T_INT, [int(m.group(4))])])
        m = RE_EXISTS_DB.match(s)
        if m:
            prefix = m.group(1) + "/"
            return scalar(T_BOOL, any(k.startswith(prefix) for k in read_state()["tables"]))
        m = RE_CREATE.match(s) or RE_DROP_DB.match(s)
        if m:
            if self.mode != "datanode":
                raise DdbError("Only data nodes serve DFS databases.")
            create = m.re is RE_CREATE

            def ddl(st):
                prefix = m.group(1) + "/"
                if create:
                    if any(k.startswith(prefix) for k in st["tables"]):
                        raise DdbError("The database [%s] already exists." % m.group(1))
                    st["tables"][prefix + m.group(2)] = []
                    st.setdefault("times", {})[prefix + m.group(2)] = []
                else:
                    if not any(k.startswith(prefix) for k in st["tables"]):
                        raise DdbError("The database [%s] does not exist." % m.group(1))
                    for k in [k for k in st["tables"] if k.startswith(prefix)]:
                        del st["tables"][k]
                        st.get("times", {}).pop(k, None)
            update(ddl)
            return None
        m = RE_LAG.match(s)
        if m:
            key = "%s/%s" % (m.group(1), m.group(2))
            st = read_state()
            if key not in st["tables"]:
                raise DdbError("loadTable: table %s does not exist." % key)
            times = st.get("times", {}).get(key, [])
            if not times:
                raise DdbError("max(time) of an empty table is NULL.")
            return scalar(T_LONG, int(time.time() * 1000) - max(times))
        m = RE_IDS.match(s)
        if m:
            key = "%s/%s" % (m.group(1), m.group(2))
            st = read_state()
            if key not in st["tables"]:
                raise DdbError("loadTable: table %s does not exist." % key)
            return vector(T_INT, st["tables"][key])
        raise DdbError("The lab double does not know this script: %s" % s[:200])


# ---------------------------------------------------------------------------------------------
# Node life


def log(path, line):
    with open(path, "a") as f:
        f.write("%s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), line))


def config_site(path):
    for line in open(path):
        k, _, v = line.strip().partition("=")
        if k == "localSite":
            return v
    raise SystemExit("%s has no localSite" % path)


def agent_loop(node):
    """The agent starts the data nodes of its machine that the leader was asked to start."""
    while True:
        time.sleep(0.1)
        st = read_state()
        me = st["nodes"][node.alias]["machine"]
        mine = [a for a in st["start_requests"] if st["nodes"][a]["machine"] == me]
        for a in mine:
            n = st["nodes"][a]
            site = "%s:%d:%s" % (n["host"], n["port"], a)
            subprocess.Popen(
                [os.path.abspath("../dolphindb"), "-console", "0", "-mode", "datanode", "-localSite", site,
                 "-home", "data", "-logFile", "log/%s.log" % a],
                stdin=subprocess.DEVNULL, stdout=open("%s.nohup" % a, "a"), stderr=subprocess.STDOUT,
                start_new_session=True)

            def done(st, a=a):
                if a in st["start_requests"]:
                    st["start_requests"].remove(a)
            update(done)


def main(argv):
    if "-version" in argv:
        print(VERSION)
        return 0
    args = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("-") and i + 1 < len(argv):
            args[argv[i][1:]] = argv[i + 1]
            i += 2
        else:
            i += 1
    mode = args.get("mode")
    if mode not in MODES:
        print("dolphindb: unknown mode %r" % mode, file=sys.stderr)
        return 1
    site = args.get("localSite") or config_site(args["config"])
    host, port, alias = site.split(":")
    port = int(port)
    logfile = args.get("logFile", "log/%s.log" % alias)
    os.makedirs(os.path.dirname(logfile) or ".", exist_ok=True)
    st = read_state()
    # no_return {alias: version}: that node does not start with that version (a port still
    # taken, a release it cannot run).
    if st.get("knobs", {}).get("no_return", {}).get(alias) == VERSION:
        log(logfile, "<ERROR> Failed to bind the socket on port %d with error code 98" % port)
        return 1
    node = Node(mode, alias, port, os.getcwd())
    try:
        srv = Server((host, port), Handler)
    except OSError as e:
        log(logfile, "<ERROR> Failed to bind the socket on port %d with error code %d" % (port, e.errno or 98))
        return 1
    srv.node = node

    def register(st):
        n = st["nodes"][alias]
        n["pid"], n["version"], n["serving"] = os.getpid(), VERSION, True
        if mode == "datanode":
            stuck = st.get("knobs", {}).get("stuck_recovering", [])
            # Recovery copies what the replica missed: it takes longer the more the chunk holds
            # (its version counts the writes it took; the knob recovery_per_write, seconds each).
            per_write = float(st.get("knobs", {}).get("recovery_per_write", 0))
            for c in st["chunks"]:
                if alias in c["replicas"]:
                    c["recovering_on"] = alias
                    c["recovering_until"] = (1e18 if c["id"] in stuck else
                                             time.time() + st["recovery_s"] + per_write * c["version"])
    update(register)
    log(logfile, "<INFO> %s %s started (mode %s) on port %d" % (alias, VERSION, mode, port))

    def term(*_):
        # A graceful shutdown (kill -TERM): no new request, the ones being answered finish
        # (bounded), then the redo log is flushed (since 2.00.5).
        with SHUTDOWN:
            SHUTTING.set()

        def down(st):
            st["nodes"][alias]["serving"] = False
        update(down)
        end = time.time() + 5
        while INFLIGHT[0] > 0 and time.time() < end:
            time.sleep(0.01)
        time.sleep(0.2)
        log(logfile, "<INFO> %s shut down" % alias)
        os._exit(0)
    signal.signal(signal.SIGTERM, term)
    if mode == "agent":
        # The data nodes it starts are its children: reaped as they end, never zombies.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        threading.Thread(target=agent_loop, args=(node,), daemon=True).start()
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
