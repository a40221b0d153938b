#!/bin/sh
# DolphinDB's clusterDemo/startagent.sh (run from clusterDemo, as the vendor's docs do).
nohup ./../dolphindb -console 0 -mode agent -home data -script dolphindb.dos -config config/agent.cfg -logFile log/agent.log > agent.nohup 2>&1 &
