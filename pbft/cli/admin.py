"""`pbft admin replace | change | apply`: change a running group through consensus
(pbft.cluster.admin; README, "Changing a running group"). Exit status: 0 done, 2 a usage
or configuration error, 1 the replicas refused or did not answer."""

from __future__ import annotations

import os
import sys

from ..errors import UsageError


def _pairs(values: list[str], what: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for v in values:
        rid, sep, address = v.partition("=")
        if not sep or not rid.isdigit():
            raise UsageError(f"{what} takes ID=HOST:PORT, not {v!r}.")
        out[int(rid)] = address
    return out


def _start_hint(plan) -> None:
    for rid, d in sorted(plan.new_replicas.items()):
        print(f"  replica {rid}: pbft replica --config {d}/cluster.toml --id {rid} --data {d}/data")
    for warning in plan.warnings:
        print(f"  first, {warning}")
    if plan.same_address:
        from ..node.clusterfile import load_cluster

        linger = load_cluster(plan.cluster_path).linger_ms / 1000
        for rid in plan.same_address:
            print(f"  replica {rid} keeps its address: its new node can listen there only once the old one "
                  f"has stopped, which lingers up to {linger:g} s after the change takes effect "
                  "(until then its start fails with the port in use, and the group runs one replica short)")


def _client_hint(plan) -> None:
    from ..cluster.admin import aside_files, staged_files
    from ..node.clusterfile import node_files

    base = os.path.dirname(os.path.abspath(plan.cluster_path))
    for name in plan.new_clients:
        print(f"new client {name}: its key and certificate are {' and '.join(node_files(base, name))}")
    for name in plan.rotated_clients:
        new, old = staged_files(base, name, plan.epoch)[0], aside_files(base, name, plan.epoch)[0]
        print(f"client {name} gets a new key, {new} until the change takes effect; then it becomes "
              f"{node_files(base, name)[0]} and the old one is kept as {old} (and likewise the .pem)")


def _leaving_hint(plan) -> None:
    """Replicas the change removes stop by themselves once they reach it; one that is
    down or far behind then never hears of it (nobody in the new group talks to it)."""
    from ..node.clusterfile import load_cluster

    before = load_cluster(plan.cluster_path).n
    after = 3 * plan.membership.f + 1
    if after < before:
        ids = ", ".join(str(i) for i in range(after, before))
        print(f"replicas {ids} leave the group: they stop by themselves once they reach the change; "
              "stop any that is down or behind by hand")


def _apply(plan, timeout: float) -> int:
    import trio

    from ..cluster.admin import ChangeRefused, apply

    try:
        answer = trio.run(apply, plan, timeout)
    except TimeoutError:
        print(f"pbft: the replicas did not answer the change to epoch {plan.epoch} in {timeout:g} s.",
              file=sys.stderr)
        return 1
    except ChangeRefused as exc:
        print(f"pbft: {exc}", file=sys.stderr)
        return 1
    print(f"epoch {answer['epoch']} begins after checkpoint {answer['after']}; {plan.cluster_path} records it")
    if plan.moved:
        print(f"the key files beside it are now epoch {answer['epoch']}'s (superseded ones moved aside, new ones into place):")
        for src, dst in plan.moved:
            print(f"  {src} -> {dst}")
    return 0


def _plan_path(args, epoch: int) -> str:
    return args.plan_file or f"{args.config}.epoch-{epoch}.plan"


def cmd_admin(args) -> int:
    from ..cluster import admin
    from .main import check_output_file

    if args.admin_command == "apply":
        plan = admin.load_plan(args.plan)
        return _apply(plan, args.timeout)
    if args.admin_command == "replace":
        plan = admin.plan(args.config, replace={args.id: args.address}, out_dir=args.out)
        print(f"replica {args.id} will be a new node at {args.address}; start it with:")
        _start_hint(plan)
        return _apply(plan, args.timeout)
    if args.plan_only:  # where the plan goes is checked before anything is written
        from ..node.clusterfile import load_cluster

        check_output_file(_plan_path(args, load_cluster(args.config).epoch + 1), "--plan-file")
    plan = admin.plan(
        args.config, replace=_pairs(args.replace, "--replace"), f=args.f, add=_pairs(args.add, "--add"),
        add_clients=args.add_client, remove_clients=args.remove_client, rotate_clients=args.rotate_client,
        out_dir=args.out,
    )
    if plan.new_replicas:
        print("new replicas; start them (before or after the change takes effect) with:")
        _start_hint(plan)
    _client_hint(plan)
    _leaving_hint(plan)
    if args.plan_only:
        path = _plan_path(args, plan.epoch)
        admin.save_plan(plan, path)
        print(f"planned epoch {plan.epoch}; apply it with: pbft admin apply {path}")
        return 0
    return _apply(plan, args.timeout)


def add_parser(sub) -> None:
    a = sub.add_parser("admin", help="change a running group through consensus (operator key)")
    subs = a.add_subparsers(dest="admin_command", metavar="ACTION")
    subs.required = True
    r = subs.add_parser("replace", help="replace one replica by a new node (new key, new address)")
    r.add_argument("id", type=int)
    r.add_argument("address", metavar="HOST:PORT")
    c = subs.add_parser("change", help="change f, replicas and clients in one epoch")
    c.add_argument("--f", type=int, default=None, help="the new f (n = 3f+1 replicas)")
    c.add_argument("--replace", action="append", default=[], metavar="ID=HOST:PORT")
    c.add_argument("--add", action="append", default=[], metavar="ID=HOST:PORT",
                   help="the address of a replica a larger f adds")
    c.add_argument("--add-client", action="append", default=[], metavar="NAME")
    c.add_argument("--remove-client", action="append", default=[], metavar="NAME")
    c.add_argument("--rotate-client", action="append", default=[], metavar="NAME",
                   help="a new key for this client (written beside the cluster file)")
    c.add_argument("--plan-only", action="store_true",
                   help="write the new nodes' directories and a plan; `pbft admin apply` sends it")
    c.add_argument("--plan-file", default=None, metavar="FILE")
    for p in (r, c):
        p.add_argument("--config", required=True, help="the cluster file (the operator's copy)")
        p.add_argument("--out", default=None, metavar="DIR",
                       help="where the new replicas' directories go (default: beside the cluster file)")
    ap = subs.add_parser("apply", help="send a planned change")
    ap.add_argument("plan", metavar="PLAN")
    from .main import positive_seconds  # the one --timeout type every command shares

    for p in (r, c, ap):
        p.add_argument("--timeout", type=positive_seconds, default=60.0,
                       help="seconds to wait for the replicas to agree")
