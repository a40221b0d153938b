#!/bin/sh
# The test command (README): installs what the suite needs on a fresh Debian machine, then runs
# formatting, lints and every test. Needs root (or sudo) for apt-get, sshd and the test user.
set -eu
cd "$(dirname "$0")/.."

. scripts/packages.sh
# Build deps of the ssh2 crate (OpenSSL, zlib, pkg-config) and of the bundled SQLite (a C
# compiler); openssh-server for the sshd lab; mariadb-server and mariadb-client for the SQL and
# backup tests (lab/mariadb-lab.sh starts a private server, with TLS certificates made by openssl;
# mysqldump and mysql run on the hosts);
# chromium, headless, renders the simulation's HTML report in a test;
# busybox-static, the root of the docker tests' images (built with `docker import`: no registry);
# util-linux for `unshare -n` (simulation with no network) and `mount`; procps (pgrep, ps) and
# passwd for tests; python3 and curl for the OpenMLDB double (lab/openmldb: its binary, ops tool
# and start.sh, which polls the components' status pages with curl) and python3 for the DolphinDB
# double (lab/dolphindb: every node and its API-protocol server) and the OceanBase double
# (lab/oceanbase: observers, obproxy, and the release's upgrade-script stand-ins, which talk to
# the cluster with the mysql client); python3-venv for the vendors' Python clients (below);
# iproute2 for the bastion lab (lab/jump-lab.sh: network namespaces joined by veth pairs); sudo
# for the `become` tests; zsh, ksh and mksh, login shells the wrapper and the host lock's script
# are tested in (beside dash and bash).
ensure_packages build-essential pkg-config libssl-dev zlib1g-dev openssh-server openssh-client \
    mariadb-server mariadb-client openssl busybox-static chromium util-linux procps passwd \
    python3 python3-venv curl iproute2 sudo zsh ksh mksh
# The docker tests drive the machine's Docker engine. Machines of this project's kind come with it
# running; elsewhere, install Debian's and start the daemon.
if ! command -v docker >/dev/null 2>&1; then
    ensure_packages docker.io
fi
if ! docker info >/dev/null 2>&1; then
    as_root sh -c 'nohup dockerd >/tmp/capstan-dockerd.log 2>&1 &'
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 60 ]; then
            echo "test.sh: the Docker daemon did not start (see /tmp/capstan-dockerd.log)" >&2
            exit 1
        fi
        sleep 1
    done
fi
# sshd refuses to start without its privilege-separation directory.
as_root mkdir -p /run/sshd
# A user with a password, for the password-authentication tests.
if ! id capstan-test >/dev/null 2>&1; then
    as_root useradd -m -s /bin/sh capstan-test
fi
echo 'capstan-test:capstan-test-pw' | as_root chpasswd
# Logins without root for the `become` tests (tests/it/privilege.rs): capstan-sudo may sudo without
# a password, capstan-sudopw must give its own (its login password), capstan-nosudo may not.
for u in capstan-sudo capstan-sudopw capstan-nosudo; do
    id "$u" >/dev/null 2>&1 || as_root useradd -m -s /bin/bash "$u"
done
# sshd (UsePAM no) refuses a locked account (`!` in /etc/shadow) even for a key: `*` is no
# password, not locked.
as_root usermod -p '*' capstan-sudo
as_root usermod -p '*' capstan-nosudo
echo 'capstan-sudopw:capstan-sudo-pw' | as_root chpasswd
printf '%s\n' 'capstan-sudo ALL=(ALL) NOPASSWD: ALL' 'capstan-sudopw ALL=(ALL) ALL' |
    as_root tee /etc/sudoers.d/capstan-test >/dev/null
as_root chmod 0440 /etc/sudoers.d/capstan-test

# The vendors' own clients, which the tests run against the doubles (shared/notes/vendor-clients.md):
# DolphinDB's Python API (lab/dolphindb/seed_writer.py, the tutorial's writer), in a virtual
# environment under target/ (Debian's Python is externally managed).
if ! target/vendor-clients/bin/python -c 'import dolphindb, pandas' >/dev/null 2>&1; then
    python3 -m venv target/vendor-clients
    target/vendor-clients/bin/pip install --quiet --disable-pip-version-check dolphindb==3.0.6.1 pandas
fi
# OceanBase's embedded kernel (SeekDB), for the conformance test of the SQL the stdlib sends and
# of the OceanBase double's collation and parameter rules (tests/it/oceanbase.rs). Its wheels
# need Linux x86_64/aarch64 with glibc >= 2.28; elsewhere the install fails and the test skips.
if ! target/vendor-clients/bin/python -c 'import pylibseekdb' >/dev/null 2>&1; then
    target/vendor-clients/bin/pip install --quiet --disable-pip-version-check pylibseekdb==1.4.0.post1 ||
        echo "test.sh: pylibseekdb cannot be installed here: the SeekDB conformance test will skip" >&2
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet
cargo test --locked "$@"
