"""The replica process (layer 5, tests/test_layers.py): transport, TLS, the node and its
group commit, SQLite storage, metrics and health endpoints, the client, the cluster file
read once (clusterfile.load_replica), and what every process shares (process.py)."""
