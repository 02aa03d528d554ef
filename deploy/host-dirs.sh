#!/bin/sh
# Split a `pbft keygen` directory into one directory per host, each holding only what
# that host may see (README, "Deploying on several hosts", step 2):
#
#   deploy/host-dirs.sh CLUSTER_DIR OUT
#
#   OUT/replica-I     cluster.toml, ca.pem, every certificate, replica-I.key only
#   OUT/client-NAME   cluster.toml, ca.pem, every certificate, client-NAME.key only
#
# ca.key goes nowhere. Copy OUT/replica-I to replica I's host as /etc/pbft (mounted
# read-only into its container). Private keys are mode 0600 and, when run as root, owned
# by KEY_OWNER (default 10001:10001, the image's user) so the container can read them;
# otherwise chown them on each host.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 CLUSTER_DIR OUT" >&2
    exit 2
fi
SRC=$1
OUT=$2
KEY_OWNER=${KEY_OWNER:-10001:10001}

if [ ! -f "$SRC/cluster.toml" ]; then
    echo "host-dirs: no $SRC/cluster.toml (make it with pbft keygen)" >&2
    exit 2
fi
if [ -e "$OUT" ]; then
    echo "host-dirs: $OUT exists; remove it first (it holds private keys)" >&2
    exit 2
fi

install -d -m 0755 "$OUT"
for key in "$SRC"/replica-*.key "$SRC"/client-*.key; do
    [ -e "$key" ] || continue
    name=$(basename "$key" .key)
    install -d -m 0755 "$OUT/$name"
    install -m 0644 "$SRC/cluster.toml" "$SRC"/*.pem "$OUT/$name/"     # ca.pem and every certificate
    install -m 0600 "$key" "$OUT/$name/"
    if [ "$(id -u)" = 0 ]; then
        chown "$KEY_OWNER" "$OUT/$name/$name.key"
    fi
    echo "host-dirs: $OUT/$name"
done
if [ "$(id -u)" != 0 ]; then
    echo "host-dirs: on each host, give its key to the image's user: chown $KEY_OWNER KEY"
fi
