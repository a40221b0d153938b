#!/usr/bin/env python3
# The OpenMLDB double's `bin/mon`: the supervisor start.sh uses in daemon mode (`start.sh start
# <component> mon`, PRODUCTS.md §1.2 and the upgrade guide's note on daemon mode).
#
#   mon "COMMAND" -d -s SECONDS -l LOG -m MON_PID_FILE -p CHILD_PID_FILE
#
# It detaches (-d), writes its own pid to -m and the component's to -p, and starts the component
# again SECONDS after it dies, writing the new pid. SIGTERM ends mon and passes the signal on to
# the component without waiting for it: the component still runs for a moment afterwards (which
# is why start.sh's stop kills the child too, and why a caller must wait for the child's pid).
import os
import shlex
import signal
import subprocess
import sys
import time


def main(argv):
    cmd = argv[0]
    opts = {}
    i = 1
    while i < len(argv):
        if argv[i] == "-d":
            opts["d"] = True
            i += 1
        else:
            opts[argv[i][1:]] = argv[i + 1]
            i += 2
    if opts.get("d") and os.fork() > 0:
        return 0
    os.setsid()
    # A daemon lets go of its caller's terminal and pipes (or start.sh's caller would wait on
    # them for as long as the daemon lives).
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    log = open(opts.get("l", "/dev/null"), "a")
    with open(opts["m"], "w") as f:
        f.write("%d\n" % os.getpid())
    child = None

    def term(*_):
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, term)
    while True:
        child = subprocess.Popen(shlex.split(cmd), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        with open(opts["p"], "w") as f:
            f.write("%d\n" % child.pid)
        log.write("mon: started %s as %d\n" % (cmd, child.pid))
        log.flush()
        code = child.wait()
        log.write("mon: %d exited with %d, restarting in %s s\n" % (child.pid, code, opts.get("s", "10")))
        log.flush()
        time.sleep(float(opts.get("s", "10")))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
