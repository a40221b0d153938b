#!/bin/sh
# Lays out the hello example on this machine for the `local` inventory:
#   examples/hello/lab.sh [DIR]   (default /tmp/capstan-hello)
# creates DIR/app1..app3 at version 1.0.0 and DIR/release at 1.1.0.
set -eu
dir=${1:-/tmp/capstan-hello}
make_app() { # make_app DIR VERSION
    mkdir -p "$1/bin"
    cat > "$1/bin/app-ctl" <<SCRIPT
#!/bin/sh
# A toy service control script: start, stop, status, version.
here=\$(cd "\$(dirname "\$0")/.." && pwd)
case "\$1" in
  start) date > "\$here/running" ;;
  stop) rm -f "\$here/running" ;;
  status) test -f "\$here/running" ;;
  version) cat "\$here/bin/VERSION" ;;
  *) echo "usage: app-ctl start|stop|status|version" >&2; exit 2 ;;
esac
SCRIPT
    chmod +x "$1/bin/app-ctl"
    # The binaries' own version: what `app-ctl version` reports (a botched swap shows).
    printf '%s\n' "$2" > "$1/bin/VERSION"
    printf '%s\n' "$2" > "$1/VERSION"
}
for a in app1 app2 app3; do make_app "$dir/$a" 1.0.0; done
make_app "$dir/release" 1.1.0
echo "hello lab ready in $dir (apps at 1.0.0, release 1.1.0 in $dir/release)"
