#!/bin/sh
# DolphinDB's clusterDemo/stopAllNodes.sh: kill -TERM to the controller, agent and data nodes of
# this machine. The vendor's script takes every `dolphindb` process of the machine
# (ps | grep dolphindb | xargs kill -TERM); the lab's machines share one kernel, so this one
# takes the processes running from this clusterDemo directory only.
here=$(pwd -P)
for p in /proc/[0-9]*; do
    [ "$(readlink "$p/cwd" 2>/dev/null)" = "$here" ] || continue
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q dolphindb || continue
    kill -TERM "${p#/proc/}" 2>/dev/null
done
exit 0
