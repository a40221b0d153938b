#!/usr/bin/env python3
# The OceanBase double's obproxy (lab/oceanbase/README.md): clients connect to one port and each
# connection is routed to an observer that answers (tried in the order of the config, a refused
# one skipped), as obproxy routes a sys-tenant session to a live server. A session whose server
# dies is cut, as through the real proxy; the next connection goes to a live one.
#
#   obproxy.py CONF.json   {"listen": [ip, port], "servers": [[ip, sql_port], ...], "pid_file"}
import json
import os
import socket
import sys
import threading


def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main(conf_path):
    conf = json.load(open(conf_path))
    if os.fork() > 0:
        return 0
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(tuple(conf["listen"]))
    srv.listen(64)
    with open(conf["pid_file"], "w") as f:
        f.write("%d\n" % os.getpid())
    while True:
        c, _ = srv.accept()
        up = None
        for ip, port in conf["servers"]:
            try:
                up = socket.create_connection((ip, port), timeout=2)
                up.settimeout(None)
                break
            except OSError:
                continue
        if up is None:
            c.close()
            continue
        threading.Thread(target=pipe, args=(c, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, c), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
