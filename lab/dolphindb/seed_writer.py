#!/usr/bin/env python3
# The writer of the vendor's grayscale-upgrade tutorial (shared/seeds/002, "We use Python API to
# write data to the DFS table in a highly available manner during the upgrade"), run by the tests
# with the vendor's own `dolphindb` package against the lab double. The tutorial's loop is kept:
# an HA session over every data node's site, a tableAppender with fitColumnType, one row
# (time, name, id) a tick. What differs: the sites, database and table come from the command
# line, the tick is shorter, and the loop ends when STOP_FILE exists; at the end it prints
# `done <last id> <now in ms>` (now as the client encodes a TIMESTAMP: naive local time).
#
#   seed_writer.py SITES DB_PATH TABLE STOP_FILE [TICK_S]     SITES: host:port,host:port,...
import datetime
import os
import random
import sys
import time

# This directory holds the double's own dolphindb.py: the vendor's package must win the import.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
import dolphindb as ddb  # noqa: E402
import pandas as pd  # noqa: E402

sites = sys.argv[1].split(",")
db_path, table_name, stop_file = sys.argv[2], sys.argv[3], sys.argv[4]
tick = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
host, port = sites[0].rsplit(":", 1)

s = ddb.session()
s.connect(host=host, port=int(port), userid="admin", password="123456", highAvailability=True,
          highAvailabilitySites=sites)
appender = ddb.tableAppender(dbPath=db_path, tableName=table_name, ddbSession=s, action="fitColumnType")
x = ['Apple', 'Microsoft', 'Meta', 'Google', 'Amazon']
i = 1
while not os.path.exists(stop_file):
    now = datetime.datetime.now()
    name = random.sample(x, 1)
    data = pd.DataFrame({'time': now, 'name': name, 'id': i})
    appender.append(data)
    print(i, flush=True)
    i = i + 1
    time.sleep(tick)
now_ms = int(pd.Timestamp(datetime.datetime.now()).value // 1_000_000)
print("done %d %d" % (i - 1, now_ms), flush=True)
