# The OceanBase double's sys tenant (lab/oceanbase/README.md): the cluster's state in one SQLite
# file that every observer of the lab shares, the catalog views the upgrade reads, and the
# `ALTER SYSTEM` statements it sends. Written from PRODUCTS.md §4, the seed and the vendor's
# upgrade scripts' SQL, independently of capstan's simulation model (src/sim/oceanbase.rs): the
# parity tests compare the two.
#
# What a real cluster does and this one does too: a server whose process is gone is INACTIVE and
# answers nothing; a restarted server serves only after a while, and its log streams and schema
# catch up later still; a parameter change reaches the last server one read late; strings compare
# case-insensitively (utf8mb4_general_ci); boolean parameters read back as True/False; an unknown
# parameter is error 5099; jobs run for a while before they end.
import json
import os
import re
import sqlite3
import time

from mysqlwire import Result, SqlError, bind

OP_NOT_ALLOW = 4179
BOOL_PARAMS = {"enable_upgrade_mode", "enable_rebalance", "enable_rereplication", "enable_ddl",
               "enable_major_freeze", "enable_sql_audit"}
PARAMS = {
    "min_observer_version": None, "enable_upgrade_mode": "False", "_upgrade_stage": "NONE",
    "server_permanent_offline_time": "3600s", "enable_rebalance": "True",
    "enable_rereplication": "True", "enable_ddl": "True", "enable_major_freeze": "True",
    "enable_sql_audit": "True", "tableapi_transport_compress_func": "none",
    # The stand-in upgrade scripts' trace of their version-specific actions (lab only).
    "_lab_special_actions": "",
}

STATE = """
CREATE TABLE server (ip TEXT, rpc_port INT, zone TEXT, sql_port INT, build_version TEXT, pid INT,
                     serving_since REAL, stop_time REAL, PRIMARY KEY (ip, rpc_port));
CREATE TABLE zone (zone TEXT PRIMARY KEY, status TEXT);
CREATE TABLE param (ip TEXT, rpc_port INT, name TEXT, value TEXT, pending TEXT,
                    PRIMARY KEY (ip, rpc_port, name));
CREATE TABLE tenant (id INT PRIMARY KEY, name TEXT, type TEXT, status TEXT, role TEXT,
                     compatible TEXT, locality TEXT, locked TEXT);
CREATE TABLE job (id INTEGER PRIMARY KEY, type TEXT, created REAL, settled TEXT);
"""

CATALOG = """
CREATE TABLE DBA_OB_SERVERS (SVR_IP TEXT COLLATE NOCASE, SVR_PORT INT, ID INT, ZONE TEXT COLLATE NOCASE,
  SQL_PORT INT, WITH_ROOTSERVER TEXT COLLATE NOCASE, STATUS TEXT COLLATE NOCASE, START_SERVICE_TIME TEXT,
  STOP_TIME TEXT, BLOCK_MIGRATE_IN_TIME TEXT, BUILD_VERSION TEXT COLLATE NOCASE);
CREATE TABLE __all_server (svr_ip TEXT COLLATE NOCASE, svr_port INT, id INT, zone TEXT COLLATE NOCASE,
  inner_port INT, status TEXT COLLATE NOCASE, with_rootserver INT, start_service_time INT, stop_time INT,
  build_version TEXT COLLATE NOCASE);
CREATE TABLE DBA_OB_ZONES (ZONE TEXT COLLATE NOCASE, STATUS TEXT COLLATE NOCASE, IDC TEXT, REGION TEXT,
  TYPE TEXT);
CREATE TABLE __all_zone (zone TEXT COLLATE NOCASE, name TEXT COLLATE NOCASE, value INT,
  info TEXT COLLATE NOCASE);
CREATE TABLE GV$OB_PARAMETERS (SVR_IP TEXT COLLATE NOCASE, SVR_PORT INT, ZONE TEXT COLLATE NOCASE,
  SCOPE TEXT COLLATE NOCASE, TENANT_ID INT, NAME TEXT COLLATE NOCASE, DATA_TYPE TEXT,
  VALUE TEXT COLLATE NOCASE, INFO TEXT, SECTION TEXT, EDIT_LEVEL TEXT);
CREATE TABLE __all_virtual_sys_parameter_stat (zone TEXT COLLATE NOCASE, svr_ip TEXT COLLATE NOCASE,
  svr_port INT, name TEXT COLLATE NOCASE, value TEXT COLLATE NOCASE);
CREATE TABLE __all_virtual_tenant_parameter_info (tenant_id INT, zone TEXT, svr_ip TEXT, svr_port INT,
  name TEXT COLLATE NOCASE, value TEXT COLLATE NOCASE);
CREATE TABLE DBA_OB_TENANTS (TENANT_ID INT, TENANT_NAME TEXT COLLATE NOCASE, TENANT_TYPE TEXT COLLATE NOCASE,
  PRIMARY_ZONE TEXT, LOCALITY TEXT COLLATE NOCASE, STATUS TEXT COLLATE NOCASE,
  TENANT_ROLE TEXT COLLATE NOCASE, LOCKED TEXT COLLATE NOCASE, COMPATIBILITY_MODE TEXT);
CREATE TABLE __all_tenant (tenant_id INT, tenant_name TEXT COLLATE NOCASE, locality TEXT COLLATE NOCASE,
  compatibility_mode INT, status TEXT COLLATE NOCASE);
CREATE TABLE __all_virtual_tenant_info (tenant_id INT, tenant_role TEXT COLLATE NOCASE);
CREATE TABLE __all_virtual_core_table (tenant_id INT, table_name TEXT COLLATE NOCASE, row_id INT,
  column_name TEXT COLLATE NOCASE, column_value TEXT COLLATE NOCASE);
CREATE TABLE GV$OB_LOG_STAT (TENANT_ID INT, LS_ID INT, SVR_IP TEXT, SVR_PORT INT, ROLE TEXT COLLATE NOCASE,
  IN_SYNC TEXT COLLATE NOCASE);
CREATE TABLE __all_virtual_server_schema_info (svr_ip TEXT, svr_port INT, tenant_id INT,
  refreshed_schema_version INT, received_schema_version INT);
CREATE TABLE __all_virtual_tablet_compaction_info (svr_ip TEXT, svr_port INT, tenant_id INT, ls_id INT,
  tablet_id INT, finished_scn INT, max_received_scn INT);
CREATE TABLE CDB_OB_MAJOR_COMPACTION (TENANT_ID INT, FROZEN_SCN INT, GLOBAL_BROADCAST_SCN INT,
  LAST_SCN INT, STATUS TEXT COLLATE NOCASE);
CREATE TABLE DBA_OB_TENANT_JOBS (JOB_ID INT, JOB_TYPE TEXT COLLATE NOCASE, JOB_STATUS TEXT COLLATE NOCASE,
  RESULT_CODE INT);
CREATE TABLE CDB_OB_LS_REPLICA_TASKS (TENANT_ID INT, TASK_ID INT);
CREATE TABLE CDB_OB_RESTORE_PROGRESS (TENANT_ID INT, STATUS TEXT);
CREATE TABLE CDB_OB_BACKUP_JOBS (TENANT_ID INT, JOB_ID INT, STATUS TEXT);
CREATE TABLE CDB_OB_ARCHIVELOG (TENANT_ID INT, STATUS TEXT COLLATE NOCASE);
CREATE TABLE CDB_OB_ARCHIVE_DEST (TENANT_ID INT, VALUE TEXT);
CREATE TABLE CDB_OB_BACKUP_PARAMETER (TENANT_ID INT, NAME TEXT COLLATE NOCASE, VALUE TEXT);
CREATE TABLE __all_virtual_ddl_task_status (tenant_id INT, task_id INT);
CREATE TABLE __all_virtual_table (tenant_id INT, table_name TEXT, compress_func_name TEXT COLLATE NOCASE);
CREATE TABLE __all_virtual_user (tenant_id INT, user_name TEXT COLLATE NOCASE);
CREATE TABLE __all_rootservice_job (job_id INT, job_type TEXT COLLATE NOCASE, job_status TEXT COLLATE NOCASE,
  tenant_id INT, gmt_create TEXT, progress INT);
"""


def encode(v):
    a, b, c, d = (int(x) for x in v.split("."))
    return (a << 32) | (b << 16) | (c << 8) | d


def version_of(build):
    return build.split("_")[0]


def substring_index(s, delim, n):
    if s is None:
        return None
    parts = str(s).split(delim)
    return delim.join(parts[:n]) if n > 0 else delim.join(parts[n:])


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return not f.read().rsplit(")", 1)[1].strip().startswith("Z")
    except (OSError, IndexError, TypeError):
        return False


def stamp(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + ".%06d" % int((t % 1) * 1e6)


COMPARE = r"(?:=|!=|<>|<=|>=|<|>|\blike\b)"


def ci_literals(q):
    """A string literal next to a comparison compares case-insensitively, as under
    utf8mb4_general_ci (SQLite compares two literals with BINARY otherwise)."""
    return re.sub(r"(?i)(%s\s*)('(?:[^']|'')*')|('(?:[^']|'')*')(\s*%s)" % (COMPARE, COMPARE),
                  lambda m: (m.group(1) + m.group(2) + " COLLATE NOCASE") if m.group(2)
                  else (m.group(3) + " COLLATE NOCASE" + m.group(4)), q)


def labels(sql):
    """The column labels of a SELECT as OceanBase gives them: an alias, else a column's name as
    written, else the expression's text."""
    m = re.match(r"(?is)\s*select\s+(?:/\*.*?\*/\s*)?(?:distinct\s+)?(.*)$", sql)
    if not m:
        return []
    body, items, depth, cur, quote = m.group(1), [], 0, "", None
    i = 0
    while i < len(body):
        ch = body[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch == ",":
            items.append(cur)
            cur = ""
            i += 1
            continue
        elif depth == 0 and re.match(r"(?is)\sfrom\s", body[i:i + 6]):
            break
        cur += ch
        i += 1
    items.append(cur)
    out = []
    for it in (x.strip() for x in items):
        a = re.match(r"(?is)^(.*?)\s+(?:as\s+)?[`\"]?([A-Za-z_][A-Za-z0-9_$]*)[`\"]?$", it)
        if a and not re.match(r"(?is)^.*\b(?:distinct|not|and|or|is|null)$", a.group(1) + " " + a.group(2)) \
                and re.search(r"(?i)\bas\s+\S+$|\)\s*[A-Za-z_]\w*$|^\S+\s+[A-Za-z_]\w*$", it):
            out.append(a.group(2))
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_$.]*$", it):
            out.append(it.split(".")[-1])
        else:
            out.append(it)
    return out


class SysTenant:
    """The sys tenant over the lab's shared state (`DIR/state.sqlite`, knobs in `DIR/knobs.json`)."""

    def __init__(self, registry):
        self.registry = registry
        self.path = os.path.join(registry, "state.sqlite")

    # ---- state ----
    def db(self):
        d = sqlite3.connect(self.path, timeout=15, isolation_level=None)
        d.execute("PRAGMA busy_timeout = 15000")
        return d

    def knobs(self):
        try:
            with open(os.path.join(self.registry, "knobs.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    @staticmethod
    def create(registry, servers, version, tenants):
        """A new cluster at `version`: servers [{ip, rpc_port, sql_port, zone}], user tenants."""
        d = sqlite3.connect(os.path.join(registry, "state.sqlite"))
        d.executescript(STATE)
        zones = []
        for s in servers:
            d.execute("INSERT INTO server VALUES (?,?,?,?,?,NULL,NULL,NULL)",
                      (s["ip"], s["rpc_port"], s["zone"], s["sql_port"], ""))
            if s["zone"] not in zones:
                zones.append(s["zone"])
            for k, v in PARAMS.items():
                d.execute("INSERT INTO param VALUES (?,?,?,?,NULL)",
                          (s["ip"], s["rpc_port"], k, version if v is None else v))
        for z in zones:
            d.execute("INSERT INTO zone VALUES (?, 'ACTIVE')", (z,))
        locality = ", ".join("FULL{1}@%s" % z for z in zones)
        d.execute("INSERT INTO tenant VALUES (1, 'sys', 'SYS', 'NORMAL', 'PRIMARY', ?, ?, 'NO')",
                  (version, locality))
        for i, name in enumerate(tenants):
            tid = 1002 + 2 * i
            d.execute("INSERT INTO tenant VALUES (?, ?, 'META', 'NORMAL', 'PRIMARY', ?, ?, 'NO')",
                      (tid - 1, "META$%d" % tid, version, locality))
            d.execute("INSERT INTO tenant VALUES (?, ?, 'USER', 'NORMAL', 'PRIMARY', ?, ?, 'NO')",
                      (tid, name, version, locality))
        d.commit()
        d.close()

    def servers(self, d):
        """Each server with `alive` (its process runs) and `serving` (it has started serving)."""
        out = []
        for ip, port, zone, sql_port, build, pid, since, stop in d.execute(
                "SELECT ip, rpc_port, zone, sql_port, build_version, pid, serving_since, stop_time FROM server"):
            alive = bool(pid) and pid_alive(pid)
            out.append({"ip": ip, "rpc_port": port, "zone": zone, "sql_port": sql_port, "build": build,
                        "alive": alive, "since": since if alive else None, "stop": stop})
        return out

    # ---- the protocol's entry point ----
    def handle(self, sql, params):
        text = bind(sql, params).strip().rstrip(";").strip()
        head = re.sub(r"\s+", " ", re.sub(r"/\*.*?\*/", " ", text, flags=re.S)).strip()
        up = head.upper()
        if up.startswith("SET ") or up.startswith("USE ") or up in ("COMMIT", "ROLLBACK", "BEGIN",
                                                                     "START TRANSACTION"):
            return Result()
        if up.startswith("SELECT @@") or up.startswith("SELECT DATABASE()"):
            return self.session_vars(head)
        d = self.db()
        try:
            d.execute("BEGIN IMMEDIATE")
            knobs = self.knobs()
            self.settle_jobs(d, knobs)
            if up.startswith("ALTER SYSTEM "):
                res = self.alter_system(d, head, up[len("ALTER SYSTEM "):])
            elif up.startswith("SELECT ") or up.startswith("WITH "):
                res = self.select(d, text, knobs)
            elif up.startswith("SHOW PARAMETERS"):
                res = self.show_parameters(d, head, knobs)
            else:
                raise SqlError(1064, "You have an error in your SQL syntax; check the manual that "
                                     "corresponds to your OceanBase version for the right syntax to use "
                                     "near '%s'" % head[:40], "42000")
            d.execute("COMMIT")
            return res
        except BaseException:
            if d.in_transaction:
                d.execute("ROLLBACK")
            raise
        finally:
            d.close()

    def session_vars(self, head):
        names = re.findall(r"@@(?:session\.|global\.)?([A-Za-z_]+)", head)
        vals = {"version_comment": "OceanBase_CE (lab double)", "max_allowed_packet": 16777216,
                "wait_timeout": 28800, "autocommit": 1, "version": "5.7.25-OceanBase_CE",
                "socket": None, "tx_isolation": "READ-COMMITTED", "transaction_isolation": "READ-COMMITTED",
                "character_set_client": "utf8mb4", "lower_case_table_names": 1}
        return Result(["@@" + n for n in names], [[vals.get(n.lower(), "") for n in names]])

    # ---- time-driven progress ----
    def settle_jobs(self, d, knobs):
        now = time.time()
        for jid, typ, created in d.execute(
                "SELECT id, type, created FROM job WHERE settled IS NULL").fetchall():
            lasts = float(knobs.get("job_seconds", 1.5))
            if now - created < lasts:
                continue
            fails = (typ == "UPGRADE_ALL" and knobs.get("job_fails")) or \
                    (typ == "ROOT_INSPECTION" and knobs.get("inspection_fails"))
            d.execute("UPDATE job SET settled = ? WHERE id = ?", ("FAILED" if fails else "SUCCESS", jid))
            if typ == "UPGRADE_ALL" and not fails:
                mov = self.cluster_param(d, "min_observer_version")
                d.execute("UPDATE tenant SET compatible = ?", (mov,))

    def cluster_param(self, d, name):
        r = d.execute("SELECT value FROM param WHERE name = ? LIMIT 1", (name,)).fetchone()
        return r[0] if r else None

    def set_everywhere(self, d, name, value):
        d.execute("UPDATE param SET value = ?, pending = NULL WHERE name = ?", (value, name))

    # ---- ALTER SYSTEM ----
    def alter_system(self, d, head, up):
        def refuse(why):
            raise SqlError(OP_NOT_ALLOW, "Operation not allowed now: %s" % why)
        servers = self.servers(d)
        m = re.match(r"SET\s+`?([A-Za-z_][A-Za-z0-9_]*)`?\s*=\s*('((?:[^']|'')*)'|[^\s']+)(.*)$", head[len("ALTER SYSTEM "):],
                     re.I | re.S)
        if m:
            return self.set_param(d, m.group(1).lower(), m.group(3) if m.group(3) is not None else m.group(2),
                                  m.group(4).strip(), servers)
        if up == "BEGIN UPGRADE":
            self.set_everywhere(d, "enable_upgrade_mode", "True")
            return Result()
        if up == "BEGIN ROLLING UPGRADE":
            if self.cluster_param(d, "enable_upgrade_mode") != "True":
                refuse("begin rolling upgrade outside upgrade mode")
            self.set_everywhere(d, "_upgrade_stage", "DBUPGRADE")
            return Result()
        if up == "END ROLLING UPGRADE":
            down = ["%s:%d" % (s["ip"], s["rpc_port"]) for s in servers if not s["since"]]
            if down:
                refuse("end rolling upgrade while server(s) %s are not serving" % ", ".join(down))
            versions = sorted({version_of(s["build"]) for s in servers})
            if len(versions) != 1:
                refuse("end rolling upgrade with servers of versions %s" % ", ".join(versions))
            self.set_everywhere(d, "min_observer_version", versions[0])
            self.set_everywhere(d, "_upgrade_stage", "POSTUPGRADE")
            return Result()
        if up == "END UPGRADE":
            self.set_everywhere(d, "enable_upgrade_mode", "False")
            self.set_everywhere(d, "_upgrade_stage", "NONE")
            return Result()
        m = re.match(r"(STOP|START) ZONE\s*(?:=\s*)?['`\"]?([A-Za-z0-9_]+)['`\"]?$", up)
        if m:
            zone = [z for (z,) in d.execute("SELECT zone FROM zone") if z.upper() == m.group(2)]
            if not zone:
                raise SqlError(4662, "zone '%s' not exist" % m.group(2).lower())
            zone = zone[0]
            if m.group(1) == "STOP":
                stopped = [z for (z,) in d.execute("SELECT zone FROM zone WHERE status = 'INACTIVE' AND zone != ?",
                                                   (zone,))]
                if stopped:
                    refuse("stop zone %s while zone %s is stopped" % (zone, stopped[0]))
                for tname, loc in d.execute("SELECT name, locality FROM tenant"):
                    zs = re.findall(r"@([A-Za-z0-9_]+)", loc)
                    left = [z for z in zs if z != zone and any(s["zone"] == z and s["since"] for s in servers)]
                    if zone in zs and 2 * len(left) <= len(zs):
                        refuse("stop zone %s: tenant %s (locality %s) would lose its majority" % (zone, tname, loc))
                d.execute("UPDATE zone SET status = 'INACTIVE' WHERE zone = ?", (zone,))
                d.execute("UPDATE server SET stop_time = ? WHERE zone = ?", (time.time(), zone))
            else:
                d.execute("UPDATE zone SET status = 'ACTIVE' WHERE zone = ?", (zone,))
                d.execute("UPDATE server SET stop_time = NULL WHERE zone = ?", (zone,))
            return Result()
        m = re.match(r"RUN UPGRADE JOB\s+'([A-Z_]+)'$", up)
        if m:
            if m.group(1) not in ("UPGRADE_ALL", "UPGRADE_VIRTUAL_SCHEMA"):
                raise SqlError(1210, "Incorrect arguments to run upgrade job: %s" % m.group(1))
            if self.cluster_param(d, "_upgrade_stage") != "POSTUPGRADE":
                refuse("run upgrade job before end rolling upgrade")
            d.execute("INSERT INTO job (type, created) VALUES (?, ?)", (m.group(1), time.time()))
            return Result()
        if re.match(r"RUN JOB\s+'ROOT_INSPECTION'$", up):
            d.execute("INSERT INTO job (type, created) VALUES ('ROOT_INSPECTION', ?)", (time.time(),))
            return Result()
        raise SqlError(1064, "You have an error in your SQL syntax; check the manual that corresponds to "
                             "your OceanBase version for the right syntax to use near '%s'" % head[13:53], "42000")

    def set_param(self, d, name, value, scope, servers):
        if name not in PARAMS:
            raise SqlError(5099, "System config unknown")
        if name in BOOL_PARAMS:
            v = value.strip().lower()
            if v in ("true", "1", "on", "yes"):
                value = "True"
            elif v in ("false", "0", "off", "no"):
                value = "False"
            else:
                raise SqlError(4147, "Invalid config, value: \"%s\", name: \"%s\"" % (value, name))
        targets = [s for s in servers]
        m = re.match(r"server\s*=?\s*'([^']+)'$", scope, re.I)
        if m:
            targets = [s for s in servers if "%s:%d" % (s["ip"], s["rpc_port"]) == m.group(1)]
            if not targets:
                raise SqlError(4018, "server %s not found" % m.group(1))
        elif scope and not re.match(r"(zone|tenant)\s*=", scope, re.I):
            raise SqlError(1064, "You have an error in your SQL syntax near '%s'" % scope[:40], "42000")
        serving = [s for s in targets if s["since"]]
        late = serving[-1] if len(serving) > 1 else None
        for s in targets:
            if s is late:
                d.execute("UPDATE param SET pending = ? WHERE ip = ? AND rpc_port = ? AND name = ?",
                          (value, s["ip"], s["rpc_port"], name))
            else:
                d.execute("UPDATE param SET value = ?, pending = NULL WHERE ip = ? AND rpc_port = ? AND name = ?",
                          (value, s["ip"], s["rpc_port"], name))
        return Result()

    # ---- SELECT over the catalog ----
    def catalog(self, d, knobs):
        c = sqlite3.connect(":memory:")
        c.executescript(CATALOG)
        c.create_function("substring_index", 3, substring_index, deterministic=True)
        c.create_function("if", 3, lambda cond, a, b: a if cond else b, deterministic=True)
        mov = self.cluster_param(d, "min_observer_version")
        c.create_function("version", 0, lambda: "5.7.25-OceanBase_CE-v%s" % mov)
        now = time.time()
        catchup = float(knobs.get("catchup_seconds", 1.0))
        servers = self.servers(d)
        zones = dict(d.execute("SELECT zone, status FROM zone").fetchall())
        tenants = d.execute("SELECT id, name, type, status, role, compatible, locality, locked FROM tenant").fetchall()
        for extra in knobs.get("extra_tenants", []):
            tenants.append((tenants[-1][0] + 2, extra, "USER", "NORMAL", "PRIMARY", tenants[0][5], tenants[0][6], "NO"))
        if knobs.get("abnormal_tenant"):
            tenants = [t if t[1] != knobs["abnormal_tenant"] else t[:3] + ("RESTORE",) + t[4:] for t in tenants]
        localities = knobs.get("locality", {})
        tenants = [t[:6] + (localities.get(t[1], t[6]),) + t[7:] for t in tenants]
        for i, s in enumerate(servers):
            status = "ACTIVE" if s["alive"] else "INACTIVE"
            since = s["since"]
            build = s["build"]
            c.execute("INSERT INTO DBA_OB_SERVERS VALUES (?,?,?,?,?,?,?,?,?,NULL,?)",
                      (s["ip"], s["rpc_port"], i + 1, s["zone"], s["sql_port"], "YES" if i == 0 else "NO", status,
                       stamp(since) if since else None, stamp(s["stop"]) if s["stop"] else None, build))
            c.execute("INSERT INTO __all_server VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (s["ip"], s["rpc_port"], i + 1, s["zone"], s["sql_port"], status,
                       1 if i == 0 else 0, int(since * 1e6) if since else 0, int(s["stop"] * 1e6) if s["stop"] else 0,
                       build))
        for z, st in zones.items():
            c.execute("INSERT INTO DBA_OB_ZONES VALUES (?, ?, '', 'sys_region', 'ReadWrite')", (z, st))
            c.execute("INSERT INTO __all_zone VALUES (?, 'status', ?, ?)", (z, 2 if st == "ACTIVE" else 1, st))
            c.execute("INSERT INTO __all_zone VALUES (?, 'region', 0, 'sys_region')", (z,))
        params = d.execute("SELECT ip, rpc_port, name, value FROM param").fetchall()
        for ip, port, name, value in params:
            s = next(x for x in servers if x["ip"] == ip and x["rpc_port"] == port)
            if not s["since"]:
                continue
            c.execute("INSERT INTO GV$OB_PARAMETERS VALUES (?,?,?,'CLUSTER',NULL,?,'STRING',?,'','','DYNAMIC_EFFECTIVE')",
                      (ip, port, s["zone"], name, value))
            c.execute("INSERT INTO __all_virtual_sys_parameter_stat VALUES (?,?,?,?,?)", (s["zone"], ip, port, name, value))
        log_unsync = knobs.get("unsynced_log")
        for s in servers:
            if not s["since"]:
                continue
            fresh = now - s["since"] < catchup
            for t in tenants:
                c.execute("INSERT INTO __all_virtual_tenant_parameter_info VALUES (?,?,?,?, 'compatible', ?)",
                          (t[0], s["zone"], s["ip"], s["rpc_port"], t[5]))
                c.execute("INSERT INTO GV$OB_LOG_STAT VALUES (?, 1, ?, ?, 'FOLLOWER', ?)",
                          (t[0], s["ip"], s["rpc_port"], "NO" if fresh or log_unsync else "YES"))
                not_refreshed = fresh or (knobs.get("schema_not_refreshed") and s is servers[-1])
                c.execute("INSERT INTO __all_virtual_server_schema_info VALUES (?,?,?,?,?)",
                          (s["ip"], s["rpc_port"], t[0], 1 if not_refreshed else 1717171712, 1717171712))
            merging = knobs.get("tablet_merging")
            c.execute("INSERT INTO __all_virtual_tablet_compaction_info VALUES (?,?,1002,1001,200001,?,?)",
                      (s["ip"], s["rpc_port"], 100 if merging else 200, 200))
        for t in tenants:
            c.execute("INSERT INTO DBA_OB_TENANTS VALUES (?,?,?,?,?,?,?,?, 'MYSQL')",
                      (t[0], t[1], t[2], t[6].split(",")[0].split("@")[-1] if t[2] != "META" else "", t[6], t[3], t[4], t[7]))
            c.execute("INSERT INTO __all_tenant VALUES (?,?,?,0,?)", (t[0], t[1], t[6], t[3]))
            c.execute("INSERT INTO __all_virtual_tenant_info VALUES (?,?)", (t[0], t[4]))
            dv = str(encode(t[5]))
            c.execute("INSERT INTO __all_virtual_core_table VALUES (?, '__all_global_stat', 0, 'target_data_version', ?)", (t[0], dv))
            c.execute("INSERT INTO __all_virtual_core_table VALUES (?, '__all_global_stat', 0, 'current_data_version', ?)", (t[0], dv))
            merging = knobs.get("merging")
            c.execute("INSERT INTO CDB_OB_MAJOR_COMPACTION VALUES (?, 100, ?, 100, ?)",
                      (t[0], 200 if merging else 100, "COMPACTING" if merging else "IDLE"))
        for jid, typ, created, settled in d.execute("SELECT id, type, created, settled FROM job"):
            c.execute("INSERT INTO __all_rootservice_job VALUES (?,?,?,?,?,?)",
                      (jid, typ, settled or "INPROGRESS", 1, stamp(created), 100 if settled else 50))
        return c

    def select(self, d, text, knobs):
        c = self.catalog(d, knobs)
        q = re.sub(r"(?i)\boceanbase\.", "", text)
        q = ci_literals(q.replace("`", '"'))
        try:
            cur = c.execute(q)
        except sqlite3.OperationalError as e:
            msg = str(e)
            m = re.match(r"no such table: (\S+)", msg)
            if m:
                raise SqlError(1146, "Table 'oceanbase.%s' doesn't exist" % m.group(1), "42S02")
            raise SqlError(1064, "You have an error in your SQL syntax (%s)" % msg, "42000")
        cols = [x[0] for x in cur.description]
        written = labels(text)
        if len(written) == len(cols) and "*" not in written:
            cols = written
        rows = cur.fetchall()
        if re.search(r"(?i)ob_parameters|sys_parameter_stat", text):
            # The late server has caught up now.
            d.execute("UPDATE param SET value = pending, pending = NULL WHERE pending IS NOT NULL")
        return Result(cols, rows)

    def show_parameters(self, d, head, knobs):
        m = re.search(r"LIKE\s+'([^']*)'", head, re.I)
        like = m.group(1) if m else "%"
        c = self.catalog(d, knobs)
        rows = c.execute("SELECT ZONE, 'observer', SVR_IP, SVR_PORT, NAME, DATA_TYPE, VALUE, INFO, SECTION, SCOPE, "
                         "'DEFAULT', EDIT_LEVEL FROM GV$OB_PARAMETERS WHERE NAME LIKE ?", (like,)).fetchall()
        return Result(["zone", "svr_type", "svr_ip", "svr_port", "name", "data_type", "value", "info", "section",
                       "scope", "source", "edit_level"], rows)
