"""What a run dir's config would run, and whether to let it: `dlops eval`, `predict`, `export`.

A run dir may come from anyone (a colleague's copy, a download), and Hydra imports and calls every
`_target_` its `.hydra/config.yaml` names. So before anything is built, the composed config's
`_target_`s are checked. Trusted without asking: classes defined in dlops, Lightning (`lightning`,
`pytorch_lightning`, `lightning_fabric`) and the parts of torch that configs name (`torch.nn`,
`torch.optim`, `torch.utils.data`), and classes or functions defined in the packages named in
DLOPS_TRUSTED_PACKAGES. Refused, with the list of what the config names: anything else, a function
of those packages (`torch.load` unpickles), the rest of torch (`torch.package.PackageExporter(path)`
overwrites any file), a private name, a `_target_` that is an interpolation, and resolvers that make
config or read the environment (`${oc.create:...}`, `${oc.env:...}`). `--trust` lets the person
say "my own run".
"""

import os
import re
from typing import Any

from dlops.errors import ConfigError

ENV = "DLOPS_TRUSTED_PACKAGES"
BUILT_IN = ("dlops", "lightning", "pytorch_lightning", "lightning_fabric", "torch.nn", "torch.optim",
            "torch.utils.data")
# resolvers that only read the config itself, the datamodule or Hydra's view of the run
SAFE_RESOLVERS = ("data", "hydra", "now", "oc.select")
RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.\-]*)\s*:")
PACKAGE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_trust_all = False  # set per command by `dlops ... --trust` (see `allow_all`)


def allow_all(flag: bool) -> None:
    """`--trust`: build whatever the run's config names (set by the CLI for each command)."""
    global _trust_all
    _trust_all = flag


def trusted_packages() -> tuple[str, ...]:
    """The packages the person trusts besides dlops, torch and Lightning: DLOPS_TRUSTED_PACKAGES,
    comma-separated (`mine,other.sub`); ConfigError for a name that is not a dotted package name."""
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    bad = [n for n in names if not PACKAGE.fullmatch(n)]
    if bad:
        raise ConfigError(f"{ENV}={os.environ[ENV]!r}: {bad[0]!r} is not a package name; give "
                          "importable package names separated by commas, e.g. mine,lab.models")
    return tuple(names)


def targets(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(key path, value) of every `_target_` in a plain config tree (dicts and lists)."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                found.append((where, value))
            else:
                found += targets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += targets(value, f"{path}[{i}]")
    return found


def unsafe_resolvers(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(key path, resolver) of every interpolation that calls a resolver outside SAFE_RESOLVERS."""
    if isinstance(node, dict):
        return [f for key, value in node.items()
                for f in unsafe_resolvers(value, f"{path}.{key}" if path else str(key))]
    if isinstance(node, list):
        return [f for i, value in enumerate(node) for f in unsafe_resolvers(value, f"{path}[{i}]")]
    if isinstance(node, str):
        return [(path, name) for name in RESOLVER.findall(node) if name not in SAFE_RESOLVERS]
    return []


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def verdict(target: Any, own: tuple[str, ...], load: bool = True) -> str | None:
    """None when `target` may be built; else why not. `own`: the person's trusted packages.

    With `load`, the object is imported (only when its name lies in a trusted package: importing
    runs that package's code) and must be defined there: `dlops.x.subprocess.Popen` is subprocess's
    class, reached through a dlops module, and is refused. Without, only its name is judged.
    """
    if not isinstance(target, str) or not PACKAGE.fullmatch(target):
        return "not a plain dotted name (an interpolation or another value cannot be checked)"
    built_in, mine = _within(target, BUILT_IN), _within(target, own)
    if not (built_in or mine):
        return "outside the trusted packages"
    if not mine and any(part.startswith("_") for part in target.split(".")):
        return "a private name"
    if not load:
        return None
    from hydra.utils import get_object

    try:
        found = get_object(target)
    except Exception:  # noqa: BLE001 - cannot be imported, so it cannot run either: Hydra will say so
        return None
    defined_in = getattr(found, "__module__", None) or ""
    if not _within(defined_in, (*BUILT_IN, *own)):
        return f"defined in {defined_in or 'an unknown module'}, outside the trusted packages"
    if not isinstance(found, type) and not _within(defined_in, own):
        return "a function, not a class (a function of dlops, torch or Lightning can read or write any file)"
    return None


def untrusted(config: dict[str, Any]) -> list[str]:
    """`where: target` of each `_target_` and resolver of `config` that is not trusted."""
    own = trusted_packages()
    return ([f"{where}: {target}" for where, target in targets(config) if verdict(target, own)]
            + [f"{where}: ${{{name}:...}}" for where, name in unsafe_resolvers(config)])


def check(config: dict[str, Any], source: str) -> None:
    """Refuse (ConfigError) a config whose `_target_`s or resolvers are not trusted, listing every
    `_target_` it names; with `--trust` (see `allow_all`), let it be."""
    if _trust_all:
        return
    own = trusted_packages()
    found, resolvers = targets(config), unsafe_resolvers(config)
    # names first: a config naming foreign code is refused before any trusted package is imported
    judged = [(where, target, verdict(target, own, load=False)) for where, target in found]
    if not (resolvers or any(reason for _, _, reason in judged)):
        judged = [(where, target, verdict(target, own)) for where, target in found]
    if not (resolvers or any(reason for _, _, reason in judged)):
        return
    lines = [f"  {where}: {target}" + (f"  <- refused: {reason}" if reason else "")
             for where, target, reason in judged]
    lines += [f"  {where}: ${{{name}:...}}  <- refused: a resolver that could make config or read "
              "the environment" for where, name in resolvers]
    raise ConfigError(
        f"{source} would run code dlops does not trust; nothing was built. What it names:\n"
        + "\n".join(lines) + "\n"
        f"Trusted: classes of {', '.join(BUILT_IN)}, and the packages in {ENV} (now "
        f"{','.join(own) or 'unset'}; e.g. {ENV}=mypackage). If this is your own run and you "
        "would run its config yourself, add --trust.")
