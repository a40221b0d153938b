#!/bin/sh
# DolphinDB's clusterDemo/startController.sh (run from clusterDemo, as the vendor's docs do).
nohup ./../dolphindb -console 0 -mode controller -home data -script dolphindb.dos -config config/controller.cfg -logFile log/controller.log -nodesFile config/cluster.nodes -clusterConfig config/cluster.cfg > controller.nohup 2>&1 &
