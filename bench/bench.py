#!/usr/bin/env python3
"""capstan beside the tools people use: SSH fan-out, warm per-command cost, engine overhead and
simulation scale. Run through bench/run.sh, which installs the peers and builds capstan.

  bench.py fanout [--hosts 20,50] [--cmds 1,10] [--reps 3] [--tools capstan,asyncssh,...]
  bench.py warm [--n 1000] [--reps 3]
  bench.py engine [--reps 5]
  bench.py sim [--hosts 10,100,1000] [--reps 3]
  bench.py scale [--hosts 100,1000,10000] [--products oceanbase,...] [--data example|per-host]
  bench.py collections [--sizes 20000,200000]
  bench.py fleet [--hosts 500] [--cmds 3] [--parallelism 50,200,500] [--host-lock on|on,off]
                 [--asyncssh-program] [--baseline PATH-TO-AN-EARLIER-CAPSTAN]
  bench.py hostcost [--small 20] [--large 220]   host CPU per connection and per command

Every figure is the median of --reps runs, with the client's CPU time (user + system of the
measured process and everything it waited for) and, where it matters, its peak memory. Each tool
runs as its own process, started inside the timing, so connection set-up is always counted.
Traffic goes only to sshd instances on 127.0.0.1 that this script starts (lab/sshd-lab.sh), all
pinned to one key exchange (KEX below) so every client does the same cryptographic work.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPSTAN = os.environ.get("CAPSTAN", os.path.join(REPO, "target", "release", "capstan"))
KEX = "curve25519-sha256"
# A user whose login shell is /bin/sh: root's shell startup on these machines costs ~85 ms per
# command (pyenv in .bashrc), which would measure the shell, not the tools.
USER = os.environ.get("BENCH_USER", "capstan-test")
PY = sys.executable


def run_measured(argv, env=None, cwd=None, limit=None, on_start=None, ok_codes=(0,)):
    """Like measure, with the child's own CPU and peak memory (os.wait4); killed after `limit`
    seconds (exit -9). Killed here rather than under timeout(1): a parent's wait4 would report
    the largest RSS any of its children ever had."""
    # Linux starts a forked child's peak-memory count at its parent's (the copied address space
    # keeps its high-water mark through exec), so wait4 on a child of this Python, which holds
    # earlier runs' output, reports at least this Python's size. GNU time, small, forks the
    # program and reports its own peak; where it is missing the figure is an upper bound.
    gnu_time = "/usr/bin/time" if os.path.exists("/usr/bin/time") and not on_start else None
    peak_file = None
    if gnu_time:
        fd, peak_file = tempfile.mkstemp(prefix="capstan-bench-peak-")
        os.close(fd)
        argv = [gnu_time, "-q", "-f", "%M", "-o", peak_file] + list(argv)
    start = time.perf_counter()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    if on_start:
        on_start(p.pid)
    import threading

    def kill():
        # The whole session: under GNU time the program is its child.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timer = threading.Timer(limit, kill) if limit else None
    if timer:
        timer.start()
    # Drain the pipes on threads so a chatty child never blocks, then wait4 for its usage.
    import threading
    bufs = {"out": b"", "err": b""}

    def drain(name, f):
        bufs[name] = f.read()
    ts = [threading.Thread(target=drain, args=("out", p.stdout)),
          threading.Thread(target=drain, args=("err", p.stderr))]
    for t in ts:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if timer:
        timer.cancel()
    for t in ts:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    peak_kib = ru.ru_maxrss
    if peak_file:
        try:
            with open(peak_file) as f:
                text = f.read().split()
            # GNU time reports a killed child as "Command terminated by signal 9" first.
            if text and text[-1].isdigit():
                peak_kib = int(text[-1])
            if "signal" in " ".join(text) and p.returncode == 0:
                p.returncode = -9
            elif p.returncode > 128 and "signal" in " ".join(text):
                p.returncode = -(p.returncode - 128)
        finally:
            os.unlink(peak_file)
    if p.returncode not in ok_codes:
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}):\n{bufs['err'].decode()[-2000:]}\n{bufs['out'].decode()[-1000:]}")
    cpu = ru.ru_utime + ru.ru_stime
    return wall, cpu, peak_kib / 1024.0, bufs["out"]


def median_of(reps, f):
    """Runs f reps times; the median wall time, and the CPU, memory and output of that run."""
    rows = [f() for _ in range(reps)]
    walls = [r[0] for r in rows]
    i = walls.index(statistics.median_low(walls))
    return statistics.median(walls), rows[i][1], rows[i][2], rows[i][3], (min(walls), max(walls))


class Lab:
    """N sshd instances on 127.0.0.1, each with its own host key, KEX pinned."""

    def __init__(self, n):
        self.dir = tempfile.mkdtemp(prefix="capstan-bench-")
        os.chmod(self.dir, 0o755)  # sshd reads authorized_keys as the bench user
        self.ports = free_ports(n)
        env = dict(os.environ, LAB_SSHD_EXTRA=f"KexAlgorithms {KEX}\nMaxStartups 500")
        subprocess.run([os.path.join(REPO, "lab", "sshd-lab.sh"), "start", self.dir]
                       + [str(p) for p in self.ports], check=True, env=env)
        self.key = os.path.join(self.dir, "id_ed25519")
        self.known = os.path.join(self.dir, "known_hosts")
        for f in (self.key, self.known):
            os.chmod(f, 0o644 if f == self.known else 0o600)

    def stop(self):
        subprocess.run([os.path.join(REPO, "lab", "sshd-lab.sh"), "stop", self.dir], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)


def free_ports(n):
    import socket
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# ---------------------------------------------------------------- the tools, one command each

def capstan_fanout(lab, n, k):
    inv = lab.path(f"inv-{n}.toml")
    with open(inv, "w") as f:
        f.write(textwrap.dedent(f"""\
            [defaults]
            transport = "ssh"
            address = "127.0.0.1"
            user = "{USER}"
            known_hosts = "{lab.known}"
            auth = {{ key = "{lab.key}" }}
            """))
        # Each host its own lock directory, as on machines of their own: the lab's instances
        # are one machine and would otherwise share one (the first take makes it, the others
        # refresh it, now and then waiting for the holder file another has just begun).
        locks = lab.path("locks")
        os.makedirs(locks, exist_ok=True)
        os.chmod(locks, 0o1777)
        for i, p in enumerate(lab.ports[:n]):
            f.write(f"\n[hosts.h{i + 1}]\nport = {p}\nhost_lock = \"{locks}/h{i + 1}\"\n")
    pb = lab.path("fanout.rhai")
    with open(pb, "w") as f:
        f.write(textwrap.dedent("""\
            let k = params(#{ k: param::optional(1, "commands per host") }).k;
            step("fan-out", || parallel(cluster().hosts(), |h| {
                for i in 0..k { h.run(["echo", "hi"]); }
            }));
            """))
    journal = lab.path("journal.db")
    return [CAPSTAN, "run", pb, "-i", inv, "-p", f"k={k}", "--parallelism", str(n),
            "--journal", journal]


def asyncssh_fanout(lab, n, k):
    # Every host at once: the bound is the number of hosts.
    return asyncssh_bounded(lab, n, k, n)


def pssh_fanout(lab, n, k):
    code = textwrap.dedent(f"""\
        from pssh.clients import ParallelSSHClient
        from pssh.config import HostConfig
        ports = {lab.ports[:n]!r}
        c = ParallelSSHClient(["127.0.0.1"] * len(ports), user={USER!r}, pkey={lab.key!r},
                              host_config=[HostConfig(port=p) for p in ports], pool_size={n})
        for _ in range({k}):
            out = c.run_command("echo hi")
            c.join(out)
            for o in out:
                list(o.stdout)
                assert o.exit_code == 0, o
        """)
    return [PY, "-c", code]


def ssh_base(lab, control=None):
    opts = ["-i", lab.key, "-l", USER, "-o", f"UserKnownHostsFile={lab.known}",
            "-o", "StrictHostKeyChecking=yes", "-o", f"KexAlgorithms={KEX}",
            "-o", "BatchMode=yes", "-F", "/dev/null"]
    if control:
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                 "-o", "ControlPersist=60"]
    return ["ssh"] + opts


def shell_fanout(lab, n, k, multiplexed):
    """One shell job per host, in parallel: K sequential ssh commands (through a master)."""
    lines = ["pids="]
    for i, p in enumerate(lab.ports[:n]):
        base = ssh_base(lab, lab.path(f"cm-{p}") if multiplexed else None)
        base = " ".join(base)
        cmds = [f"{base} -p {p} 127.0.0.1 echo hi >/dev/null" for _ in range(k)]
        if multiplexed:
            cmds.append(f"{base} -p {p} -O exit 127.0.0.1 2>/dev/null")
        lines.append("( " + " && ".join(cmds) + " ) &")
        lines.append('pids="$pids $!"')
    lines.append("fail=0; for p in $pids; do wait $p || fail=1; done; exit $fail")
    script = lab.path(f"{'cm' if multiplexed else 'ssh'}-{n}-{k}.sh")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ["sh", script]


def ansible_fanout(lab, n, k):
    inv = lab.path(f"ansible-{n}.ini")
    with open(inv, "w") as f:
        f.write("[lab]\n")
        for i, p in enumerate(lab.ports[:n]):
            f.write(f"h{i + 1} ansible_host=127.0.0.1 ansible_port={p}\n")
        f.write(textwrap.dedent(f"""\
            [lab:vars]
            ansible_user={USER}
            ansible_ssh_private_key_file={lab.key}
            ansible_python_interpreter=/usr/bin/python3
            ansible_ssh_common_args=-o UserKnownHostsFile={lab.known} -o KexAlgorithms={KEX}
            """))
    pb = lab.path(f"ansible-{k}.yml")
    with open(pb, "w") as f:
        f.write("- hosts: lab\n  gather_facts: false\n  tasks:\n")
        for i in range(k):
            f.write(f"    - command: echo hi\n")
    cfg = lab.path("ansible.cfg")
    with open(cfg, "w") as f:
        f.write(textwrap.dedent(f"""\
            [defaults]
            forks = {n}
            host_key_checking = True
            [ssh_connection]
            pipelining = True
            control_path_dir = {lab.path("ansible-cp")}
            """))
    bindir = os.path.dirname(PY)
    return [os.path.join(bindir, "ansible-playbook"), "-i", inv, pb], dict(
        os.environ, ANSIBLE_CONFIG=cfg, ANSIBLE_LOCAL_TEMP=lab.path("ansible-tmp"))


TOOLS = {
    "capstan": lambda lab, n, k: (capstan_fanout(lab, n, k), None),
    "asyncssh": lambda lab, n, k: (asyncssh_fanout(lab, n, k), None),
    "parallel-ssh": lambda lab, n, k: (pssh_fanout(lab, n, k), None),
    "ssh ControlMaster": lambda lab, n, k: (shell_fanout(lab, n, k, True), None),
    "ssh per command": lambda lab, n, k: (shell_fanout(lab, n, k, False), None),
    "ansible": lambda lab, n, k: ansible_fanout(lab, n, k),
}


def fanout(args):
    hosts = [int(x) for x in args.hosts.split(",")]
    cmds = [int(x) for x in args.cmds.split(",")]
    tools = args.tools.split(",") if args.tools else list(TOOLS)
    lab = Lab(max(hosts))
    try:
        print(f"## SSH fan-out (KEX {KEX}, user {USER}, median of {args.reps})\n")
        print("| hosts × cmds | " + " | ".join(tools) + " |")
        print("|---|" + "---|" * len(tools))
        for n in hosts:
            for k in cmds:
                cells = []
                for t in tools:
                    argv, env = TOOLS[t](lab, n, k)
                    if t == "ansible" and args.ansible_reps is not None:
                        reps = args.ansible_reps
                    else:
                        reps = args.reps
                    wall, cpu, _, _, (lo, hi) = median_of(reps, lambda: run_measured(argv, env=env))
                    cells.append(f"{wall:.2f} s (cpu {cpu:.2f} s)")
                    print(f"  {t} {n}x{k}: {wall:.3f} s [{lo:.3f}-{hi:.3f}], cpu {cpu:.3f} s",
                          file=sys.stderr)
                print(f"| {n} × {k} | " + " | ".join(cells) + " |", flush=True)
    finally:
        lab.stop()


def warm(args):
    lab = Lab(1)
    n = args.n
    port = lab.ports[0]
    try:
        inv = lab.path("inv-1.toml")
        with open(inv, "w") as f:
            f.write(f'[hosts.h1]\ntransport = "ssh"\naddress = "127.0.0.1"\nport = {port}\nuser = "{USER}"\n'
                    f'known_hosts = "{lab.known}"\nauth = {{ key = "{lab.key}" }}\n')
        pb = lab.path("warm.rhai")
        with open(pb, "w") as f:
            f.write(f'let h = cluster().host("h1");\nh.run(["true"]);\n'
                    f'step("loop", || {{ for i in 0..{n} {{ h.run(["true"]); }} }});\n')
        capstan = [CAPSTAN, "run", pb, "-i", inv, "--journal", lab.path("j.db")]
        ssh2 = [PY, "-c", textwrap.dedent(f"""\
            import socket
            from ssh2.session import Session
            s = socket.create_connection(("127.0.0.1", {port}))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sess = Session(); sess.handshake(s)
            sess.userauth_publickey_fromfile({USER!r}, {lab.key!r})
            for _ in range({n + 1}):
                ch = sess.open_session(); ch.execute("true")
                while ch.read()[0] > 0: pass
                ch.wait_eof(); ch.close(); ch.wait_closed()
                assert ch.get_exit_status() == 0
            """)]
        local = ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do sh -c true; i=$((i+1)); done"]
        print(f"## Warm session: {n} sequential `true` on one host (median of {args.reps})\n")
        print("| client | total | per command | cpu |")
        print("|---|---|---|---|")
        for name, argv in [("capstan", capstan), ("ssh2-python loop", ssh2),
                           ("local fork+exec (`sh -c true`)", local)]:
            wall, cpu, _, _, _ = median_of(args.reps, lambda: run_measured(argv))
            print(f"| {name} | {wall:.2f} s | {wall / n * 1000:.2f} ms | {cpu:.2f} s |", flush=True)
    finally:
        lab.stop()


def engine(args):
    print(f"## Engine overhead (median of {args.reps})\n")
    print("| what | time | peak memory |")
    print("|---|---|---|")
    wall, _, rss, _, _ = median_of(args.reps, lambda: run_measured([CAPSTAN, "--version"]))
    print(f"| `capstan --version` | {wall * 1000:.1f} ms | {rss:.1f} MiB |")
    out = subprocess.run([CAPSTAN, "list", "--json"], capture_output=True, check=True).stdout
    import json
    for p in json.loads(out):
        wall, _, rss, _, _ = median_of(args.reps, lambda: run_measured([CAPSTAN, "check", p["name"]]))
        print(f"| `capstan check {p['name']}` | {wall * 1000:.1f} ms | {rss:.1f} MiB |")
    lab = Lab(50)
    try:
        argv = capstan_fanout(lab, 50, 10)
        wall, cpu, rss, _, _ = median_of(args.reps, lambda: run_measured(argv))
        print(f"| a run over 50 SSH hosts × 10 commands | {wall:.2f} s (cpu {cpu:.2f} s) | {rss:.1f} MiB |",
              flush=True)
    finally:
        lab.stop()


def sim(args):
    hosts = [int(x) for x in args.hosts.split(",")]
    d = tempfile.mkdtemp(prefix="capstan-sim-")
    try:
        print(f"## Simulation scale: the hello playbook (median of {args.reps})\n")
        print("| hosts | time | cpu | peak memory | actions |")
        print("|---|---|---|---|---|")
        for n in hosts:
            sc = os.path.join(d, f"s{n}.toml")
            with open(sc, "w") as f:
                f.write('[params]\nrelease = "/srv/releases/hello-1.1.0"\n\n')
                f.write('[inventory.defaults]\ntransport = "ssh"\ngroups = ["app"]\nvars = { root = "/srv/hello" }\n')
                for i in range(n):
                    f.write(f'\n[inventory.hosts.app{i}]\naddress = "10.1.{i // 250}.{i % 250 + 1}"\n')
                f.write('\n[defaults]\nfree_space = "20GiB"\n')
                for i in range(n):
                    f.write(f'\n[hosts.app{i}]\nports = [8080]\nfiles = {{ "/srv/hello/VERSION" = "1.0.0\\n", '
                            '"/srv/hello/bin/app-ctl" = "x", "/srv/hello/bin/VERSION" = "1.0.0\\n", '
                            '"/srv/releases/hello-1.1.0/VERSION" = "1.1.0\\n", '
                            '"/srv/releases/hello-1.1.0/bin/app-ctl" = "y", '
                            '"/srv/releases/hello-1.1.0/bin/VERSION" = "1.1.0\\n" }\n')
                # The app's model: availability is sampled after every change on every host.
                f.write(f'\n[[products]]\nmodel = "hello"\ngroup = "app"\nmin_up = {max(n - 1, 1)}\n')
            argv = [CAPSTAN, "simulate", os.path.join(REPO, "examples/hello/playbook.rhai"),
                    "--scenario", sc, "--json"]
            wall, cpu, rss, out, _ = median_of(args.reps, lambda: run_measured(argv))
            actions = out.decode().count('"event":"action"') if isinstance(out, bytes) else 0
            print(f"| {n} | {wall:.2f} s | {cpu:.2f} s | {rss:.1f} MiB | {actions} |", flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_sampled(argv, limit=None):
    """run_measured, plus the client's peak thread count and open descriptors, read from
    /proc every 20 ms while it runs."""
    import threading
    peak = {"threads": 0, "fds": 0}
    box = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            pid = box.get("pid")
            if pid:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("Threads:"):
                                peak["threads"] = max(peak["threads"], int(line.split()[1]))
                    peak["fds"] = max(peak["fds"], len(os.listdir(f"/proc/{pid}/fd")))
                except OSError:
                    pass
            time.sleep(0.02)
    t = threading.Thread(target=sample)
    t.start()
    try:
        wall, cpu, rss, out = run_measured(argv, limit=limit, on_start=lambda pid: box.update(pid=pid))
    finally:
        done.set()
        t.join()
    return wall, cpu, rss, out, peak["threads"], peak["fds"]


def asyncssh_bounded(lab, n, k, parallelism, command="echo hi"):
    """asyncssh over n hosts, at most `parallelism` connections at once, k commands each (the
    login shell runs `command`: `echo hi` is its builtin, `/usr/bin/echo hi` the program capstan
    runs)."""
    code = textwrap.dedent(f"""\
        import asyncio, asyncssh, resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        async def host(sem, port):
            async with sem:
                async with asyncssh.connect("127.0.0.1", port, username={USER!r},
                        client_keys=[{lab.key!r}], known_hosts={lab.known!r},
                        kex_algs=[{KEX!r}]) as c:
                    for _ in range({k}):
                        r = await c.run({command!r}, check=True)
        async def main():
            sem = asyncio.Semaphore({parallelism})
            await asyncio.gather(*(host(sem, p) for p in {lab.ports[:n]!r}))
        asyncio.run(main())
        """)
    return [PY, "-c", code]


def fleet(args):
    """A fleet over real SSH: N sshd on 127.0.0.1, K commands per host, at several
    parallelisms, capstan beside asyncssh in the same run, the clients taking turns rep by rep.
    Besides the client's own figures, the hosts' CPU per host: what the whole machine spent less
    the client, divided by N (sshd, the login shells and whatever they started)."""
    n, k = args.hosts, args.cmds
    lab = Lab(n)
    try:
        print(f"## A fleet of {n} sshd × {k} commands (KEX {KEX}, median of {args.reps})\n")
        print("| parallelism | client | wall | cpu | hosts' cpu per host | peak memory | peak threads | peak open files |")
        print("|---|---|---|---|---|---|---|---|")
        base = capstan_fanout(lab, n, k)
        inv = base[base.index("-i") + 1]
        with open(inv) as f:
            locked = f.read()
        # `off`: capstan also without its maintenance lock on the hosts (`host_lock = false`),
        # to tell what the lock costs each host from what the commands cost.
        unlocked = inv.replace(".toml", "-nolock.toml")
        with open(unlocked, "w") as f:
            f.write(re.sub(r'host_lock = ".*"\n', "", locked)
                    .replace("[defaults]\n", "[defaults]\nhost_lock = false\n", 1))
        modes = args.host_lock.split(",")
        for par in [int(x) for x in args.parallelism.split(",")]:
            clients = []
            for mode in modes:
                argv = base[:-4] + ["--parallelism", str(par), "--journal", lab.path(f"j-{par}-{mode}.db")]
                if mode == "off":
                    argv[argv.index("-i") + 1] = unlocked
                clients.append(("capstan" if mode == "on" else "capstan, no host lock", argv))
            if args.baseline:
                # Another build of capstan (an earlier commit), with the lock, in the same turns.
                argv = [args.baseline] + base[1:-4] + ["--parallelism", str(par), "--journal",
                                                      lab.path(f"j-{par}-baseline.db")]
                clients.append(("capstan, baseline", argv))
            clients.append(("asyncssh", asyncssh_bounded(lab, n, k, par)))
            if args.asyncssh_program:
                # The same work as capstan's `["echo", "hi"]`: a program, not the shell's builtin.
                clients.append(("asyncssh, /usr/bin/echo",
                                asyncssh_bounded(lab, n, k, par, "/usr/bin/echo hi")))
            # Round robin: the machine's speed drifts by the minute, and every client meets the
            # same drift.
            rows = {name: [] for name, _ in clients}
            for _ in range(args.reps):
                for name, argv in clients:
                    # The hosts' CPU: the whole machine's less the client's (it runs nothing
                    # else; a listener's own accounting would miss what outlives its parent,
                    # such as capstan's watchers).
                    before = machine_cpu()
                    r = run_sampled(argv, limit=args.limit)
                    time.sleep(0.5)  # the last sessions' processes ended
                    rows[name].append(r + ((machine_cpu() - before - r[1]) / n,))
            for name, _ in clients:
                rs = sorted(rows[name], key=lambda r: r[0])
                wall, cpu, rss, _, threads, fds, _ = rs[len(rs) // 2]
                host = statistics.median(r[6] for r in rs)
                print(f"| {par} | {name} | {wall:.2f} s | {cpu:.2f} s | {host * 1000:.1f} ms | {rss:.1f} MiB | {threads} | {fds} |",
                      flush=True)
    finally:
        lab.stop()


def machine_cpu():
    """CPU seconds the whole machine has spent (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def hosts_cpu(argv, limit=600):
    """Runs argv; the CPU the machine spent besides the client's own (the hosts' share)."""
    before = machine_cpu()
    wall, cpu, _, _ = run_measured(argv, limit=limit)
    return machine_cpu() - before - cpu, wall, cpu


def hostcost(args):
    """What a host's sshd and shell spend per connection and per command, for each client: the
    whole machine's CPU less the client's own, one sshd on 127.0.0.1, commands one at a time.
    Each figure is the difference between K1 and K2 commands (or connections), so what both
    runs share (start, connect, lock, release) cancels out."""
    lab = Lab(1)
    k1, k2 = args.small, args.large
    try:
        print(f"## Host CPU per operation (one sshd, KEX {KEX}, median of {args.reps}; "
              f"difference of {k1} and {k2})\n")
        print("| client | operation | host CPU | client CPU |")
        print("|---|---|---|---|")

        def per(make, what, client):
            rows = []
            for _ in range(args.reps):
                h1, _, c1 = hosts_cpu(make(k1))
                h2, _, c2 = hosts_cpu(make(k2))
                rows.append(((h2 - h1) / (k2 - k1), (c2 - c1) / (k2 - k1)))
            rows.sort()
            h, c = rows[len(rows) // 2]
            print(f"| {client} | {what} | {h * 1000:.2f} ms | {c * 1000:.2f} ms |", flush=True)

        def asyncssh(conns, cmds, cmd):
            code = textwrap.dedent(f"""\
                import asyncio, asyncssh
                async def main():
                    for _ in range({conns}):
                        async with asyncssh.connect("127.0.0.1", {lab.ports[0]}, username={USER!r},
                                client_keys=[{lab.key!r}], known_hosts={lab.known!r},
                                kex_algs=[{KEX!r}]) as c:
                            for _ in range({cmds}):
                                await c.run({cmd!r}, check=True)
                asyncio.run(main())
                """)
            return [PY, "-c", code]

        per(lambda k: asyncssh(k, 1, "true"), "a connection (with one `true`)", "asyncssh")
        per(lambda k: asyncssh(1, k, "echo hi"), "a command (`echo hi`, warm connection)", "asyncssh")

        def capstan(k):
            argv = capstan_fanout(lab, 1, k)
            return argv[:-4] + ["--parallelism", "1", "--journal", lab.path(f"hc-{k}.db")]
        per(capstan, "a command (`[\"echo\", \"hi\"]`, warm connection, served by the lock's script)",
            "capstan")
    finally:
        lab.stop()


def scale(args):
    """Every shipped playbook's example scenario at growing sizes: wall, CPU, peak memory, and
    the growth exponent: fitted (least squares, log-log) over the sizes, and from the size before.
    `--output text` measures the report people read (no --json: the text report on stdout, the
    live progress on stderr); `--fail-at F` makes the upgrade of the host at fraction F of the
    cluster fail (its first stop), so the rehearsal rolls back every host upgraded before it."""
    import math
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import scale as gen
    sizes = [int(x) for x in args.hosts.split(",")]
    products = args.products.split(",") if args.products else list(gen.PRODUCTS)
    d = tempfile.mkdtemp(prefix="capstan-scale-")
    try:
        what = "--json" if args.output == "json" else "the text report"
        if args.fail_at is not None:
            what += f", the host at {args.fail_at:g} of the cluster failing"
        print(f"## Simulation scale: the shipped playbooks (data: {args.data}, {what}, median of "
              f"{args.reps}, time limit {args.limit} s)\n")
        print("| product | hosts | time | cpu | peak memory | actions | growth exponent (time, memory): fitted; from the size before |")
        print("|---|---|---|---|---|---|---|")
        for p in products:
            points = []
            for n in sizes:
                sc = gen.write(p, n, os.path.join(d, f"{p}-{n}"), args.data)
                argv = [CAPSTAN, "simulate", os.path.join(REPO, "playbooks", f"{p}.rhai"),
                        "--scenario", sc]
                if args.output == "json":
                    argv.append("--json")
                if args.fail_at is not None:
                    argv += ["--fail", fail_spec(p, n, args.fail_at)]
                # A failed rehearsal (the rollback rehearsed) exits 1.
                ok = (0,) if args.fail_at is None else (0, 1)
                try:
                    wall, cpu, rss, out, _ = median_of(
                        args.reps, lambda: run_measured(argv, limit=args.limit, ok_codes=ok))
                except RuntimeError as e:
                    # Killed at the limit (-9); anything else is a real failure.
                    if "(-9)" not in str(e).split("\n")[0]:
                        raise
                    wall, cpu, rss, out = args.limit, 0.0, 0.0, b""
                text = out.decode() if isinstance(out, bytes) else str(out)
                if args.output == "json":
                    done = '"event":"run_finished"' in text
                    actions = text.count('"event":"action"')
                else:
                    # The text report's plan: one line per action, under its step.
                    done = "\nplan (every action, in order)\n" in text
                    actions = sum(1 for l in text.split("\nplan (every action, in order)\n", 1)[-1]
                                  .split("\n\n", 1)[0].splitlines() if not l.startswith("  ["))
                cell = f"{wall:.2f} s" if done else f"> {args.limit} s (stopped)"
                exp = ""
                if done:
                    points.append((n, wall, rss))
                    if len(points) > 1:
                        # Least squares in log-log over every size so far, and the slope from
                        # the size before: a term that grows faster shows at the large end first.
                        def fit(k):
                            xs = [math.log(p[0]) for p in points]
                            ys = [math.log(p[k]) for p in points]
                            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
                            return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
                                    / sum((x - mx) ** 2 for x in xs))
                        (n0, w0, r0), (n1, w1, r1) = points[-2], points[-1]
                        f = math.log(n1 / n0)
                        exp = (f"{fit(1):.2f}, {fit(2):.2f} (fit from {points[0][0]}); "
                               f"{math.log(w1 / w0) / f:.2f}, {math.log(r1 / r0) / f:.2f} (from {n0})")
                print(f"| {p} | {n} | {cell} | {cpu:.2f} s | {rss:.1f} MiB | {actions} | {exp} |", flush=True)
                if not done:
                    break
    finally:
        shutil.rmtree(d, ignore_errors=True)


def fail_spec(product, n, at):
    """`--fail` for the host at fraction `at` of a generated cluster: the stop of its upgrade
    (OceanBase upgrades a zone at a time: the stop of the zone at that fraction)."""
    import scale as gen
    if product == "oceanbase":
        return f"*alter system stop zone `zone{min(3, int(at * 3) + 1)}`*"
    host = gen.host_at(product, n, at)
    stop = {"openmldb": "*start.sh stop tablet*", "dolphindb": "*sh stopAllNodes.sh*",
            "oms": "*docker stop*"}[product]
    return f"{host}:{stop}"


def collections_bench(args):
    """A script that builds a large array and map: the engine's cost per element."""
    d = tempfile.mkdtemp(prefix="capstan-coll-")
    try:
        print(f"## Large collections in a playbook (median of {args.reps})\n")
        print("| elements | array of ints | array of maps | map |")
        print("|---|---|---|---|")
        for n in [int(x) for x in args.sizes.split(",")]:
            cells = []
            for what, body in [("ints", "let a = []; for i in 0..N { a.push(i); } if a.len() != N { fail(\"lost\"); }"),
                               ("maps", "let a = []; for i in 0..N { a.push(#{ id: i, name: `row ${i}` }); }"),
                               ("map", "let m = #{}; for i in 0..N { m[`k${i}`] = i; }")]:
                pb = os.path.join(d, f"{what}.rhai")
                with open(pb, "w") as f:
                    f.write(body.replace("N", str(n)) + "\n")
                sc = os.path.join(d, "scenario.toml")
                with open(sc, "w") as f:
                    f.write('[inventory.hosts.h1]\naddress = "10.0.0.1"\n')
                argv = [CAPSTAN, "simulate", pb, "--scenario", sc, "--json"]
                wall, _, rss, _, _ = median_of(args.reps, lambda: run_measured(argv))
                cells.append(f"{wall:.2f} s ({rss:.0f} MiB)")
            print(f"| {n} | " + " | ".join(cells) + " |", flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--hosts", default="20,50")
    f.add_argument("--cmds", default="1,10")
    f.add_argument("--reps", type=int, default=3)
    f.add_argument("--ansible-reps", type=int, default=None)
    f.add_argument("--tools", default="")
    w = sub.add_parser("warm")
    w.add_argument("--n", type=int, default=1000)
    w.add_argument("--reps", type=int, default=3)
    e = sub.add_parser("engine")
    e.add_argument("--reps", type=int, default=5)
    s = sub.add_parser("sim")
    s.add_argument("--hosts", default="10,100,1000")
    s.add_argument("--reps", type=int, default=3)
    c = sub.add_parser("scale")
    c.add_argument("--hosts", default="100,1000,10000")
    c.add_argument("--products", default="")
    c.add_argument("--data", default="example", choices=["example", "per-host"])
    c.add_argument("--reps", type=int, default=1)
    c.add_argument("--limit", type=int, default=300)
    c.add_argument("--output", default="json", choices=["json", "text"])
    c.add_argument("--fail-at", type=float, default=None,
                   help="fraction of the cluster (0-1): that host's first stop fails")
    fl = sub.add_parser("fleet")
    fl.add_argument("--hosts", type=int, default=500)
    fl.add_argument("--cmds", type=int, default=3)
    fl.add_argument("--parallelism", default="50,200,500")
    fl.add_argument("--reps", type=int, default=3)
    fl.add_argument("--limit", type=int, default=600)
    fl.add_argument("--host-lock", default="on", help="on, off or on,off: capstan with and/or without its host lock")
    fl.add_argument("--baseline", default="",
                    help="another capstan binary (an earlier build) to run beside, with its lock")
    fl.add_argument("--asyncssh-program", action="store_true",
                    help="also asyncssh running /usr/bin/echo (a program, as capstan does) beside its builtin echo")
    hc = sub.add_parser("hostcost")
    hc.add_argument("--small", type=int, default=20)
    hc.add_argument("--large", type=int, default=220)
    hc.add_argument("--reps", type=int, default=3)
    k = sub.add_parser("collections")
    k.add_argument("--sizes", default="20000,200000")
    k.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    {"fanout": fanout, "warm": warm, "engine": engine, "sim": sim, "scale": scale,
     "collections": collections_bench, "fleet": fleet, "hostcost": hostcost}[a.cmd](a)


if __name__ == "__main__":
    main()
