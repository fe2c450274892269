"""``scidl cluster``: a virtual cluster of network namespaces with shaped links."""

from __future__ import annotations

import argparse
import os
import subprocess

NAME = "cluster"
HELP = ("a virtual cluster on this machine (network namespaces, a bridge, shaped links; "
        "needs root, ip and tc): up, down, status, exec")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import HelpFormatter, option

    sub = p.add_subparsers(dest="action", metavar="ACTION")
    up = sub.add_parser("up", help="create the cluster (no-op when it is already up)",
                        formatter_class=HelpFormatter)
    option(up, "--nodes", type=int, default=2, help="virtual nodes (network namespaces)")
    option(up, "--link", default="1gbit",
           help="rate of each node's link to the switch, both directions (e.g. 100mbit, 1gbit)")
    option(up, "--racks", type=int, default=1,
           help="split the nodes into this many racks, each behind a --rack-link uplink")
    option(up, "--rack-link", default=None, help="rate of each rack's uplink to the core switch")
    for name, text in (("down", "remove everything the cluster made (also after a crash)"),
                       ("status", "nodes, addresses and the shaping read back from tc")):
        s = sub.add_parser(name, help=text, formatter_class=HelpFormatter)
        _name_option(s)
    _name_option(up)
    ex = sub.add_parser("exec", help="run a command inside a node: exec NODE -- CMD ...",
                        formatter_class=HelpFormatter)
    _name_option(ex)
    ex.add_argument("node", help="node index or name (0 or n0)")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (after --)")


def _name_option(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    option(p, "--name", default="default", help="cluster name (1 to 8 letters or digits)")


def node_index(text: str, nodes: int) -> int:
    """``"1"`` or ``"n1"`` → 1; UserError outside the cluster."""
    from scidl.cli import UserError

    raw = text[1:] if text.startswith("n") else text
    if not raw.isdigit() or int(raw) >= nodes:
        raise UserError(f"node {text!r}: give 0..{nodes - 1} (or n0..n{nodes - 1})")
    return int(raw)


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.cluster import net
    from scidl.cluster.spec import NODE_IF, ClusterSpec, SpecError, parse_rate

    if not getattr(args, "action", None):
        raise UserError("name an action: scidl cluster up|down|status|exec (see --help)")
    try:
        if args.action == "up":
            spec = ClusterSpec(
                name=args.name, nodes=args.nodes, link_bits=parse_rate(args.link),
                racks=args.racks,
                rack_link_bits=parse_rate(args.rack_link, "--rack-link") if args.rack_link else None)
            print(net.up(spec))
            return 0
        if args.action == "down":
            ClusterSpec(name=args.name, nodes=1)  # validates the name
            print(net.down(args.name))
            return 0
        if args.action == "status":
            print("\n".join(net.status_lines(args.name)))
            return 0
        spec = net.load(args.name)
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            raise UserError("scidl cluster exec NODE -- CMD ...: no command given")
        i = node_index(args.node, spec.nodes)
        env = {**os.environ, "GLOO_SOCKET_IFNAME": NODE_IF}
        return subprocess.call(["ip", "netns", "exec", spec.node_ns(i), *cmd], env=env)
    except (SpecError, net.ClusterError) as e:
        raise UserError(str(e)) from None
