#!/bin/sh
# A private MariaDB server on 127.0.0.1 for the tests: its own data directory, port and socket,
# nothing shared with a system server.
#
#   lab/mariadb-lab.sh start DIR PORT [WATCH_PID]   initialise DIR (first time) and start the server
#   lab/mariadb-lab.sh stop DIR                     stop it (SIGTERM, then SIGKILL after 10 s)
#   lab/mariadb-lab.sh kill DIR                     kill it at once (a server that dies mid-query)
#
# The server has a user `capstan`@`%` with password `capstan-db-pw` and every privilege, reached
# over TCP at 127.0.0.1:PORT; root is reached through DIR/sock. It offers TLS with a certificate for
# 127.0.0.1 signed by the lab's own CA (DIR/tls/ca.pem). With WATCH_PID the server is stopped when
# that process ends, so a test run that dies leaves no server behind.
# Needs mariadb-server (scripts/test.sh installs it). Run as root (the server runs as root too).
set -eu
cmd=${1:?usage: mariadb-lab.sh start DIR PORT [WATCH_PID] | stop DIR | kill DIR}
dir=${2:?usage: mariadb-lab.sh start DIR PORT [WATCH_PID] | stop DIR | kill DIR}

find_bin() {
    for b in "$@"; do
        p=$(command -v "$b" 2>/dev/null || true)
        [ -n "$p" ] && { echo "$p"; return 0; }
        [ -x "/usr/sbin/$b" ] && { echo "/usr/sbin/$b"; return 0; }
    done
    return 1
}

case $cmd in
start)
    port=${3:?usage: mariadb-lab.sh start DIR PORT [WATCH_PID]}
    watch=${4:-}
    server=$(find_bin mariadbd mysqld) || {
        echo "mariadb-lab: mariadbd not found; install mariadb-server (scripts/test.sh does)" >&2
        exit 1
    }
    client=$(find_bin mariadb mysql) || {
        echo "mariadb-lab: the mariadb client is not installed (mariadb-client)" >&2
        exit 1
    }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ ! -d "$dir/data/mysql" ]; then
        install_db=$(find_bin mariadb-install-db mysql_install_db)
        "$install_db" --no-defaults --datadir="$dir/data" --user=root \
            --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 || {
            cat "$dir/install.log" >&2
            exit 1
        }
    fi
    if [ ! -f "$dir/tls/server.pem" ]; then
        mkdir -p "$dir/tls"
        (
            cd "$dir/tls"
            openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=capstan lab CA" \
                -keyout ca.key -out ca.pem >/dev/null 2>&1
            openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
                -keyout server.key -out server.csr >/dev/null 2>&1
            printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
                -extfile san.ext -out server.pem >/dev/null 2>&1
        )
    fi
    "$server" --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
        --ssl-ca="$dir/tls/ca.pem" --ssl-cert="$dir/tls/server.pem" --ssl-key="$dir/tls/server.key" \
        --socket="$dir/sock" --pid-file="$dir/pid" --user=root --skip-name-resolve \
        --log-error="$dir/error.log" --innodb-buffer-pool-size=16M --innodb-log-file-size=8M \
        --performance-schema=OFF --skip-log-bin >/dev/null 2>&1 &
    echo $! > "$dir/server.pid"
    i=0
    until "$client" --no-defaults --socket="$dir/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
            echo "mariadb-lab: the server did not start; its log:" >&2
            tail -n 20 "$dir/error.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    "$client" --no-defaults --socket="$dir/sock" -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'capstan'@'%' IDENTIFIED BY 'capstan-db-pw';
GRANT ALL PRIVILEGES ON *.* TO 'capstan'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    if [ -n "$watch" ]; then
        spid=$(cat "$dir/server.pid")
        # Detached from the caller's pipes, so the caller's output ends when it does.
        nohup sh -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null' \
            mariadb-lab-watch "$watch" "$spid" >/dev/null 2>&1 &
    fi
    ;;
stop | kill)
    [ -f "$dir/server.pid" ] || exit 0
    pid=$(cat "$dir/server.pid")
    if [ "$cmd" = kill ]; then
        kill -9 "$pid" 2>/dev/null || true
    else
        kill "$pid" 2>/dev/null || true
    fi
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        [ $i -eq 100 ] && kill -9 "$pid" 2>/dev/null || true
        sleep 0.1
    done
    rm -f "$dir/server.pid"
    ;;
*)
    echo "usage: mariadb-lab.sh start DIR PORT [WATCH_PID] | stop DIR | kill DIR" >&2
    exit 2
    ;;
esac
