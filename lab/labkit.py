# What every product double's scripts share: laying files out, processes by pid, a JSON state
# file under a lock, waiting for a condition, and the `lab.py COMMAND ARGS..` entry point.
#
# The set-up scripts (lab/PRODUCT/lab.py) import it from their parent directory; a double copied
# into a host's install (DolphinDB's server/dolphindb, OpenMLDB's bin/openmldb) finds it by the
# path the set-up script writes into it. Only mechanics live here: what a product answers stays
# in that product's double.
import fcntl
import inspect
import json
import os
import signal
import sys
import time

LABDIR = os.path.dirname(os.path.abspath(__file__))


def write(path, text, mode=0o644):
    """Writes `text` to `path` (making its directory) with `mode`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def lay(path, template, mode=0o755, **subst):
    """Writes the file `template` to `path`, each @KEY@ replaced by subst[KEY]."""
    src = open(template).read()
    for k, v in subst.items():
        src = src.replace("@%s@" % k, v)
    write(path, src, mode)


def pid_alive(pid):
    """Whether process `pid` runs: a zombie answers kill(0) but serves nothing."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def pid_of(path):
    """The pid in pid file `path`, or None."""
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


def kill(path, sig=signal.SIGKILL):
    """Signals the process of pid file `path`, if there is one."""
    pid = pid_of(path)
    if pid:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class JsonState:
    """A JSON document in a file that several processes read and change: each change runs under
    an exclusive lock on `lock` and replaces the file whole, so a reader never sees half of one."""

    def __init__(self, path, lock):
        self.path = path
        self.lock = lock

    def exists(self):
        return os.path.exists(self.path)

    def read(self):
        with open(self.path) as f:
            return json.load(f)

    def write(self, state):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def update(self, fn):
        """Runs fn(state) under the lock and writes the state back; returns fn's value."""
        with open(self.lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            st = self.read()
            out = fn(st)
            self.write(st)
            return out


def set_knob(state, name, value_json, flat=False):
    """`lab.py knob`: sets failure knob `name` (README: Knobs) to a JSON value, in the state's
    "knobs" object (or, `flat`, at the top of a document of knobs only)."""
    value = json.loads(value_json)

    def put(st):
        (st if flat else st.setdefault("knobs", {}))[name] = value

    state.update(put)


def wait(what, cond, timeout=90):
    """Polls cond() until it holds; exits naming `what` after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    sys.exit("lab.py: %s did not happen within %d s" % (what, timeout))


def on_spec(fn):
    """A command whose first argument is SPEC.json: fn gets the document read, then the rest."""
    rest = list(inspect.signature(fn).parameters.values())[1:]

    def run(path, *args):
        with open(path) as f:
            return fn(json.load(f), *args)

    first = inspect.Parameter("spec", inspect.Parameter.POSITIONAL_ONLY)
    run.__signature__ = inspect.Signature([first] + rest)
    return run


def usage(script):
    """The comment block at the head of `script` (a lab.py lists its commands there)."""
    lines = []
    for line in open(script).read().splitlines()[1:]:
        if not line.startswith("#"):
            break
        lines.append(line[2:])
    return "\n".join(lines)


def main(argv, commands, script):
    """`lab.py COMMAND ARGS..`: runs commands[COMMAND](*ARGS) and prints what it returns as JSON;
    exits with the head of `script` (its usage) when there is no such command or it takes other
    arguments."""
    fn = commands.get(argv[0]) if argv else None
    if fn is None:
        sys.exit(usage(script))
    try:
        inspect.signature(fn).bind(*argv[1:])
    except TypeError:
        sys.exit("lab.py %s: wrong arguments\n%s" % (argv[0], usage(script)))
    out = fn(*argv[1:])
    if out is not None:
        print(json.dumps(out, indent=1, sort_keys=True))
