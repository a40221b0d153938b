#!/usr/bin/env python3
# The OpenMLDB double's `tools/openmldb_ops.py`: the vendor's operations tool, as it behaves.
#
# Like the real one it logs to stderr as `LEVEL: message`, and exits 0 on every error it
# handles: callers must read the `ERROR:` lines. Only an uncaught exception exits non-zero (e.g.
# pre-upgrade without --endpoints). Every manage command turns auto_failover off for its run and
# back on at the end; a crash in between leaves it off. post-upgrade deletes the whole statfile,
# but only when it completes: a failure returns first and keeps it, and a missing statfile is an
# uncaught exception (exit 1, auto_failover left off). With several --endpoints only the first is
# used. showtablestatus drops every table whose Warnings hold text (see show_tablestatus).
# It reads the cluster through the openmldb binary given by --openmldb_bin_path (the double's
# binary is also its library). See lab/openmldb/README.md.
import sys

# No __pycache__ beside the binary (it is part of bin/, which the playbook snapshots).
sys.dont_write_bytecode = True
import importlib.machinery
import importlib.util
import logging
import os
import sys
import time
from optparse import OptionParser

logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
log = logging.getLogger(__name__)

MANAGE = ["recoverdata", "scaleout", "scalein", "pre-upgrade", "post-upgrade"]
QUERY = ["showopstatus", "showtablestatus"]

# post-upgrade polls the ops every 2 s in the real tool; the double polls faster.
WAIT_EVERY_S = 0.25
WAIT_LIMIT_S = 120


def load_binary(path):
    loader = importlib.machinery.SourceFileLoader("openmldb_double", path)
    spec = importlib.util.spec_from_loader("openmldb_double", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def parse():
    p = OptionParser()
    p.add_option("--openmldb_bin_path", default="./bin/openmldb")
    p.add_option("--zk_cluster", default="127.0.0.1:2181")
    p.add_option("--zk_root_path", default="/openmldb")
    p.add_option("--cmd", default="")
    p.add_option("--endpoints", default=None)
    p.add_option("--statfile", default=".stat")
    p.add_option("--allow_single_replica", action="store_true", default=False)
    p.add_option("--db", default="")
    p.add_option("--filter", default=None)
    return p.parse_args()[0]


def ns_cmd(o, cmd):
    """What the real tool runs through the ns_client (logged at INFO, as it does)."""
    log.info("%s --zk_cluster=%s --zk_root_path=%s --role=ns_client --interactive=false --cmd=%s"
             % (o.openmldb_bin_path, o.zk_cluster, o.zk_root_path, cmd))


def pre_upgrade(ob, o, st, ep):
    lines = []
    log.info("start to pre-upgrade endpoint %s" % ep)
    for t in st["tables"]:
        for part in t["partitions"]:
            lead = ob.leader_of(part)
            if lead is None or lead["ep"] != ep:
                continue
            if len(part["replicas"]) > 1:
                to = [r for r in part["replicas"] if r["ep"] != ep and ob.replica_alive(st, r)]
                if not to:
                    log.error("no alive follower for table %s in %s pid %d" % (t["name"], t["db"], part["pid"]))
                    continue
                ns_cmd(o, "changeleader %s %d auto" % (t["name"], part["pid"]))
                ob.change_leader(st, t, part, to[0]["ep"])
                ns_cmd(o, "recovertable %s %d %s" % (t["name"], part["pid"], ep))
                ob.new_op(st, "kRecoverTableOP", t, part["pid"])
                lines.append("%s,%s,%s,%d,%d," % (ep, t["db"], t["name"], t["tid"], part["pid"]))
            elif o.allow_single_replica:
                log.info("table %s in %s pid %d has a single replica, skipped" % (t["name"], t["db"], part["pid"]))
            else:
                load = {e: 0 for e in st["tablets"] if e != ep and ob.node_alive(st, e)}
                for tt in st["tables"]:
                    for pp in tt["partitions"]:
                        for r in pp["replicas"]:
                            if r["ep"] in load:
                                load[r["ep"]] += 1
                if not load:
                    log.error("no other alive tablet to add a replica of %s in %s" % (t["name"], t["db"]))
                    continue
                new_ep = min(load, key=lambda e: (load[e], st["tablets"].index(e)))
                ns_cmd(o, "addreplica %s %d %s" % (t["name"], part["pid"], new_ep))
                part["replicas"].append({"ep": new_ep, "leader": False, "alive": True})
                ob.new_op(st, "kAddReplicaOP", t, part["pid"])
                ns_cmd(o, "changeleader %s %d %s" % (t["name"], part["pid"], new_ep))
                ob.change_leader(st, t, part, new_ep)
                lines.append("%s,%s,%s,%d,%d,%s" % (ep, t["db"], t["name"], t["tid"], part["pid"], new_ep))
    with open(o.statfile, "a") as f:
        for line in lines:
            f.write(line + "\n")
    log.info("pre-upgrade done, %d partition(s) moved, recorded in %s" % (len(lines), o.statfile))


def wait_ops(ob, zk):
    start = time.time()
    while True:
        st = zk.read()
        busy = [op for op in st["ops"] if ob.op_status(op) in ("kInited", "kDoing")]
        if not busy:
            return True
        if time.time() - start > WAIT_LIMIT_S:
            log.error("ops still running after %d s: %s" % (WAIT_LIMIT_S, [op["op_id"] for op in busy]))
            return False
        for op in busy:
            log.info("waiting op %d %s" % (op["op_id"], op["op_type"]))
        time.sleep(WAIT_EVERY_S)


def post_upgrade(ob, o, st, ep):
    """As the real tool: the statfile is opened without a check (missing: an uncaught
    FileNotFoundError, exit 1, auto_failover left off); the first failure returns at once and
    leaves the statfile in place; only a complete run removes it."""
    with open(o.statfile) as f:
        lines = [l.strip().split(",") for l in f if l.strip()]
    log.info("start to post-upgrade %s" % ep)
    knob = st.get("knobs", {}).get("post_upgrade_error")
    for (lep, db, name, tid, pid, new_ep) in lines:
        if lep != ep:
            continue
        t = next(x for x in st["tables"] if x["db"] == db and x["name"] == name)
        part = t["partitions"][int(pid)]
        me = [r for r in part["replicas"] if r["ep"] == ep]
        if knob and knob.get("times", 0) > 0:
            knob["times"] -= 1
            if knob.get("level") == "warning":
                # The failure the real tool reports at WARNING only: no ERROR line, exit 0.
                log.warning("cannot find leader endpoint for %s %s" % (name, pid))
                return
            me = []
        if not me or ob.replica_state(st, me[0]) is None:
            log.error("get empty table status for partition %s_%s from %s" % (tid, pid, ep))
            return
        if me[0]["leader"]:
            log.warning("%s %s %s in %s is already leader" % (db, name, pid, ep))
            continue
        lead = ob.leader_of(part)
        if new_ep == "" and (lead is None or not ob.replica_alive(st, lead)):
            # The real tool logs this one at WARNING and gives up: no ERROR line at all.
            log.warning("cannot find leader endpoint for %s %s" % (name, pid))
            return
        ns_cmd(o, "changeleader %s %s %s" % (name, pid, ep))
        ob.change_leader(st, t, part, ep)
        if new_ep:
            ns_cmd(o, "delreplica %s %s %s" % (name, pid, new_ep))
            part["replicas"] = [r for r in part["replicas"] if r["ep"] != new_ep]
            ob.new_op(st, "kDelReplicaOP", t, part["pid"])
    os.remove(o.statfile)
    log.info("post-upgrade done, %s removed" % o.statfile)


def recoverdata(ob, o, st):
    for t in st["tables"]:
        if ob.table_status(st, t) == (0, ""):
            log.info("%s in %s is healthy" % (t["name"], t["db"]))
            continue
        for part in t["partitions"]:
            for r in part["replicas"]:
                if r.get("stuck"):
                    log.error("recover table partition failed. db %s name %s pid %d endpoint %s"
                              % (t["db"], t["name"], part["pid"], r["ep"]))
                    continue
                if not r["alive"] and ob.node_alive(st, r["ep"]):
                    ns_cmd(o, "recovertable %s %d %s" % (t["name"], part["pid"], r["ep"]))
                    r["alive"] = True
                    ob.new_op(st, "kRecoverTableOP", t, part["pid"])
            lead = ob.leader_of(part)
            if lead is None or not ob.replica_alive(st, lead):
                alive = [r for r in part["replicas"] if ob.replica_alive(st, r)]
                if alive:
                    ob.change_leader(st, t, part, alive[0]["ep"])
        if ob.table_status(st, t)[0] == 0:
            log.info("%s in %s recover success" % (t["name"], t["db"]))
        else:
            log.error("recover table failed. db %s name %s, check log for detail" % (t["db"], t["name"]))


def show_opstatus(ob, o, st):
    rows = [["db", "op_id", "op_type", "name", "pid", "status", "start_time", "execute_time",
             "end_time", "cur_task", "for_replica_cluster"]]
    now = time.time()
    for op in st["ops"]:
        status = ob.op_status(op, now)
        if o.filter and status != o.filter:
            continue
        if o.db and op["db"] != o.db:
            continue
        done = status in ("kDone", "kFailed", "kCanceled")
        start = time.strftime("%Y%m%d%H%M%S", time.localtime(op["created"]))
        end = time.strftime("%Y%m%d%H%M%S", time.localtime(op["created"] + ob.OP_INITED_S + ob.OP_DOING_S)) if done else "-"
        rows.append([op["db"], op["op_id"], op["op_type"], op["name"], op["pid"], status, start,
                     "%ds" % max(0, int(now - op["created"])), end, "-" if done else "kLoadTable", "no"])
    print(ob.table_rows(rows))


def show_tablestatus(ob, o, st):
    """The real tool runs `show table status like 'P';` through the SQL client, skips to the
    first `------` rule, splits every later line on whitespace, and keeps the header and the
    rows with exactly as many fields as the header (or one fewer: an empty Warnings). A row
    whose Warnings hold text has more fields, and its continuation lines fewer: both vanish."""
    text = ob.text_table(ob.STATUS_HEADER, ob.table_status_rows(st, o.filter or "%"))
    parsed = []
    started = False
    for line in text.split("\n"):
        line = line.lstrip()
        if line.startswith("------"):
            started = True
            continue
        if started and line.split():
            parsed.append(line.split())
    if not parsed:
        return
    header = parsed[0]
    rows = [r + [""] if len(r) == len(header) - 1 else r for r in parsed[1:]
            if len(r) in (len(header), len(header) - 1)]
    print(ob.table_rows([header] + rows))


def main():
    o = parse()
    if o.cmd not in MANAGE + QUERY:
        print("unsupported cmd: %s" % o.cmd)
        print("available cmds: %s" % (MANAGE + QUERY))
        return
    ob = load_binary(o.openmldb_bin_path)
    zk = ob.ZkStore(o.zk_cluster, o.zk_root_path)
    if not zk.exists() or ob.ns_leader(zk.read()) is None:
        log.error("connect OpenMLDB failed, get ns failed")
        sys.exit()
    knobs = zk.read().get("knobs", {})
    if o.cmd in QUERY:
        st = zk.read()
        (show_opstatus if o.cmd == "showopstatus" else show_tablestatus)(ob, o, st)
        return
    ns_cmd(o, "confget auto_failover")
    auto_failover = zk.read()["auto_failover"]

    def set_af(value):
        ns_cmd(o, "confset auto_failover %s" % str(value).lower())
        def put(st):
            st["auto_failover"] = value
        zk.update(put)

    if auto_failover:
        set_af(False)
    if knobs.get("ops_crash") == o.cmd:
        raise RuntimeError("knob ops_crash: %s crashed" % o.cmd)
    if knobs.get("ops_error", {}).get("cmd") == o.cmd:
        log.error(knobs["ops_error"].get("message", "%s failed" % o.cmd))
    elif o.cmd in ("pre-upgrade", "post-upgrade"):
        if o.endpoints is None:
            log.warning("must provide --endpoints")
        eps = o.endpoints.split(",")  # crashes on None, as the real tool does
        if len(eps) != 1:
            log.warning("must provide --endpoints with only one endpoint")
        # Only the first endpoint is acted on, whatever else was given.
        if o.cmd == "pre-upgrade":
            zk.update(lambda st: pre_upgrade(ob, o, st, eps[0]))
        elif wait_ops(ob, zk):
            zk.update(lambda st: post_upgrade(ob, o, st, eps[0]))
    elif o.cmd == "recoverdata":
        zk.update(lambda st: recoverdata(ob, o, st))
    else:
        log.error("%s is not modelled by the double" % o.cmd)
    if auto_failover:
        set_af(True)


if __name__ == "__main__":
    main()
