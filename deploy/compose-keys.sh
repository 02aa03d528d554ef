#!/bin/sh
# Keys and per-host directories for deploy/compose.yaml (a 4-replica group, f = 1).
#
#   deploy/compose-keys.sh [OUT]          # OUT defaults to keys/compose; PBFT="the pbft command"
#
# The steps of README "Deploying on several hosts", for the four containers of the
# compose file instead of four machines:
#   1. `pbft keygen` into OUT/cluster (the trusted machine's copy, ca.key included), then
#      each replica's address set to its compose service name, replicaI:7000, and
#      `pbft config check`;
#   2. deploy/host-dirs.sh: OUT/replica-I for service replicaI (mounted read-only at
#      /etc/pbft: cluster.toml, ca.pem, the certificates, its own key only), OUT/client-ops
#      and OUT/client-app for clients.
set -eu

PBFT=${PBFT:-pbft}
OUT=${1:-keys/compose}

if [ -e "$OUT" ]; then
    echo "compose-keys: $OUT exists; remove it first (it holds private keys)" >&2
    exit 2
fi

$PBFT keygen --dir "$OUT/cluster" --f 1 --clients ops,app --cluster-id pbft-compose \
    --host 127.0.0.1 --base-port 7000
for i in 0 1 2 3; do
    sed -i "s/^address = \"127\.0\.0\.1:700$i\"/address = \"replica$i:7000\"/" "$OUT/cluster/cluster.toml"
done
$PBFT config check "$OUT/cluster/cluster.toml"
"$(dirname "$0")/host-dirs.sh" "$OUT/cluster" "$OUT/hosts"
