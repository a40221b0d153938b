#!/usr/bin/env python3
# Runs statements on OceanBase's own kernel, embedded (pylibseekdb, shared/notes/vendor-clients.md),
# for the conformance test in tests/it/oceanbase.rs: the vendor's parser and collation judge the
# SQL capstan sends and the behaviour the lab double claims. Not part of the double.
#
#   seekdb_check.py DIR STATEMENTS.json   prints one JSON line per statement:
#                                         {"sql", "ok": true, "rows"} or {"sql", "code", "error"}
# Exits 3 when pylibseekdb cannot be imported (the test then skips, saying why).
import json
import re
import sys

try:
    import pylibseekdb
except Exception as e:  # not installable here (glibc < 2.28, another architecture)
    print("pylibseekdb is not available: %s" % e, file=sys.stderr)
    sys.exit(3)


def main(db_dir, path):
    pylibseekdb.open(db_dir=db_dir)
    cur = pylibseekdb.connect().cursor()
    for sql in json.load(open(path)):
        try:
            cur.execute(sql)
            rows = [list(r) for r in cur.fetchall()]
            print(json.dumps({"sql": sql, "ok": True, "rows": rows}, default=str))
        except Exception as e:
            m = re.search(r"code=(\d+)", str(e))
            print(json.dumps({"sql": sql, "code": int(m.group(1)) if m else -1, "error": str(e)}))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
