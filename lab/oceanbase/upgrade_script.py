#!/usr/bin/env python3
# Stand-in for the upgrade scripts an OceanBase @VERSION@ release ships in etc/ (lab/oceanbase/
# README.md): installed as upgrade_checker.py, upgrade_pre.py, upgrade_health_checker.py and
# upgrade_post.py, it acts by the name it was run under. What it does, each real script does too
# (PRODUCTS.md §4.3): the same options (-h -P -u -p -t -m -l, and -z for the health checker), a
# log in the format `[time] LEVEL file:line message` on stdout and in the log file with the
# password masked, a traceback and a non-zero exit on failure. Its SQL goes to the cluster
# through the `mysql` command-line client. The version-specific "special actions" of this stand-in
# are visible in the cluster as the lab-only parameter `_lab_special_actions` (pre:V, post:V).
# Knob `script_fails` ({"upgrade_pre.py": "exit1" | "exit0"}): the script fails, with a
# traceback and exit 1, or with ERROR lines in its log and exit 0 (obd's executer has done that).
import getopt
import inspect
import json
import os
import subprocess
import sys
import time
import traceback

VERSION = "@VERSION@"
REGISTRY = "@REGISTRY@"
NAME = os.path.basename(sys.argv[0])
LOG = None
STATS = []


def log(level, msg):
    caller = inspect.stack()[1]
    line = "[%s] %s %s:%d %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), level, NAME, caller.lineno, msg)
    print(line, flush=True)
    LOG.write(line + "\n")
    LOG.flush()


class MyError(Exception):
    pass


class Conn:
    def __init__(self, host, port, user, password):
        self.args = ["mysql", "--protocol=tcp", "-h", host, "-P", str(port), "-u", user, "--batch",
                     "--skip-column-names", "-D", "oceanbase"]
        self.env = dict(os.environ, MYSQL_PWD=password)

    def rows(self, sql):
        t0 = time.time()
        r = subprocess.run(self.args + ["-e", sql], capture_output=True, text=True, env=self.env)
        STATS.append((sql, time.time() - t0))
        if r.returncode != 0:
            log("ERROR", "mysql connector error, fail to execute sql: %s, %s" % (sql, r.stderr.strip()))
            raise MyError(r.stderr.strip())
        log("INFO", "succeed to execute sql: %s, rowcount = %d" % (sql, len(r.stdout.splitlines())))
        return [l.split("\t") for l in r.stdout.splitlines()]

    def value(self, sql):
        rows = self.rows(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise MyError("unmatched row/column cnt")
        return rows[0][0]


def wait_until(conn, sql, expect, timeout, every=1):
    deadline = time.time() + timeout
    while True:
        got = conn.value(sql)
        if got == str(expect):
            return
        if time.time() >= deadline:
            raise MyError("result not expected, sql: '%s', expected: '%s', current: '%s'" % (sql, expect, got))
        time.sleep(every)


def wait_param(conn, name, value, timeout):
    wait_until(conn, "select count(*) from GV$OB_PARAMETERS where name = '%s' and value != '%s'" % (name, value),
               0, timeout)


def add_special_action(conn, tag):
    old = conn.value("select distinct value from GV$OB_PARAMETERS where name = '_lab_special_actions'")
    value = ",".join([x for x in old.split(",") if x] + [tag])
    conn.rows("alter system set _lab_special_actions = '%s'" % value)
    log("INFO", "special action %s done" % tag)


def checker(conn, timeout):
    fail = []
    mov = conn.rows("select distinct value from GV$OB_PARAMETERS where name='min_observer_version'")
    if len(mov) != 1:
        fail.append("min_observer_version is not sync")
    else:
        v = [int(x) for x in mov[0][0].split(".")]
        if v < [4, 1, 0, 0]:
            fail.append("last barrier cluster version is 4.1.0.0. prohibit cluster upgrade from cluster version less than 4.1.0.0")
    if int(conn.value("select count(1) as unsync_cnt from GV$OB_LOG_STAT where in_sync = 'NO'")):
        fail.append("replicas unsync, please check")
    n = int(conn.value("select count(1) from CDB_OB_MAJOR_COMPACTION where (GLOBAL_BROADCAST_SCN > LAST_SCN or STATUS != 'IDLE')"))
    if n:
        fail.append("%d tenant is merging, please check" % n)
    if int(conn.value("select count(*) as count from DBA_OB_TENANTS where status != 'NORMAL'")):
        fail.append("has abnormal tenant, should stop")
    n = int(conn.value("select count(*) from __all_server where (start_service_time <= 0 or status != \"active\")"))
    if n:
        fail.append("%d observer not available , please check" % n)
    if conn.value("select if (a.cnt = b.cnt, 1, 0) as passed from (select count(*) as cnt from __all_virtual_server_schema_info where refreshed_schema_version > 1 and refreshed_schema_version % 8 = 0) as a join (select count(*) as cnt from __all_server join __all_tenant) as b") != "1":
        fail.append("0 schema not available, please check")
    if len(conn.rows("select distinct(substring_index(build_version, '_', 1)) from __all_server")) != 1:
        fail.append("servers build_version not match")
    for (name,) in conn.rows("select tenant_name from DBA_OB_TENANTS"):
        if name.lower() in ("all", "all_user", "all_meta"):
            fail.append("a tenant named all/all_user/all_meta (case insensitive) cannot exist in the cluster, please rename the tenant")
            break
    if fail:
        raise MyError("upgrade checker failed with %d reasons: %s" % (len(fail), ", ".join("[%s] " % x for x in fail)))
    conn.rows("alter system set server_permanent_offline_time = '72h'")
    wait_until(conn, "select count(*) as cnt from __all_virtual_sys_parameter_stat where name = 'server_permanent_offline_time' and value != '72h'", 0, timeout)


def health(conn, zone, timeout):
    where = " and zone = '%s'" % zone if zone else ""
    if zone and conn.value("select count(1) from DBA_OB_ZONES where zone = '%s'" % zone) != "1":
        raise MyError("zone %s not exist" % zone)
    wait_until(conn, "select count(*) from DBA_OB_SERVERS where (status != 'ACTIVE' or start_service_time is null)" + where, 0, timeout)
    wait_until(conn, "select count(*) from GV$OB_LOG_STAT where in_sync = 'NO'", 0, timeout)
    wait_until(conn, "select count(*) from __all_virtual_server_schema_info where refreshed_schema_version <= 1", 0, timeout)
    if len(conn.rows("select distinct substring_index(build_version, '_', 1) from DBA_OB_SERVERS where 1 = 1" + where)) != 1:
        raise MyError("more than one observer version%s" % (" in zone " + zone if zone else ""))


def pre(conn, timeout):
    conn.rows("alter system begin upgrade")
    wait_param(conn, "enable_upgrade_mode", "True", timeout)
    conn.rows("alter system begin rolling upgrade")
    wait_param(conn, "_upgrade_stage", "DBUPGRADE", timeout)
    add_special_action(conn, "pre:" + VERSION)
    wait_until(conn, "select count(1) from CDB_OB_MAJOR_COMPACTION where (GLOBAL_BROADCAST_SCN > LAST_SCN or STATUS != 'IDLE')", 0, timeout)


def post(conn, timeout):
    health(conn, None, timeout)
    conn.rows("alter system end rolling upgrade")
    wait_param(conn, "min_observer_version", VERSION, timeout)
    wait_param(conn, "_upgrade_stage", "POSTUPGRADE", timeout)
    conn.rows("alter system run upgrade job 'UPGRADE_ALL'")
    job_sql = "select job_status from __all_rootservice_job where job_type = '%s' order by job_id desc limit 1"
    deadline = time.time() + max(timeout, 60)
    while conn.value(job_sql % "UPGRADE_ALL") == "INPROGRESS":
        if time.time() > deadline:
            raise MyError("run job UPGRADE_ALL timeout")
        time.sleep(1)
    if conn.value(job_sql % "UPGRADE_ALL") != "SUCCESS":
        raise MyError("run job UPGRADE_ALL failed")
    add_special_action(conn, "post:" + VERSION)
    conn.rows("alter system run job 'root_inspection'")
    conn.rows("alter system end upgrade")
    wait_param(conn, "enable_upgrade_mode", "False", timeout)


def main():
    global LOG
    opts, _ = getopt.getopt(sys.argv[1:], "h:P:u:p:t:m:l:z:", ["host=", "port=", "user=", "password=",
                                                             "timeout=", "module=", "log-file=", "zone="])
    o = {k.lstrip("-")[0] if len(k) == 2 else k: v for k, v in opts}
    LOG = open(o.get("l", os.path.splitext(NAME)[0] + ".log"), "w")
    timeout = int(o.get("t", 0)) or 60
    log("INFO", 'parameters from cmd: host="%s", port=%s, user="%s", password="******", timeout="%s", module="%s", log-file="%s"%s'
        % (o.get("h"), o.get("P"), o.get("u"), o.get("t", 0), o.get("m", "all"), o.get("l"),
           (', zone="%s"' % o["z"]) if "z" in o else ""))
    knobs = {}
    try:
        knobs = json.load(open(os.path.join(REGISTRY, "knobs.json")))
    except (OSError, ValueError):
        pass
    how = knobs.get("script_fails", {}).get(NAME)
    conn = Conn(o["h"], o["P"], o["u"], o.get("p", ""))
    try:
        if how:
            raise MyError("%s: fail to execute special action (knob script_fails)" % NAME)
        if NAME == "upgrade_checker.py":
            checker(conn, timeout)
        elif NAME == "upgrade_pre.py":
            pre(conn, timeout)
        elif NAME == "upgrade_health_checker.py":
            health(conn, o.get("z"), timeout)
        elif NAME == "upgrade_post.py":
            post(conn, timeout)
        else:
            raise MyError("unknown script %s" % NAME)
    except Exception as e:
        for line in traceback.format_exc().rstrip().splitlines():
            log("ERROR", line)
        if how == "exit0":
            return 0
        raise
    log("INFO", "================STATISTICS================")
    for sql, t in STATS:
        log("INFO", "%.3fs %s" % (t, " ".join(sql.split())))
    log("INFO", "%s %s finished" % (NAME, VERSION))
    return 0


if __name__ == "__main__":
    sys.exit(main())
