"""dlops' own `--help` for training (`dlops train --help`, `python train.py --help`): the config
groups and options of the folders searched, each with its file's first comment, and the top-level
keys of `train.yaml` with theirs. Read from the YAML files as text: no Hydra, no torch (fast)."""

import re
from pathlib import Path

import yaml

from dlops.configs import PACKAGED

# Hydra's own group and the per-machine settings: not options a person picks on the command line
HIDDEN_GROUPS = ("hydra", "local")
INTRO = """\
{command}: train a PyTorch Lightning model from small YAML configs, composed by Hydra.
Each run gets a directory of its own (metrics, checkpoints, plots, summary.json) under outputs/.

Usage: {command} [--config-dir DIR] [-m] [GROUP=OPTION ...] [KEY=VALUE ...]
"""
EXAMPLES = (
    ("model=cnn trainer.max_epochs=5", "an option of a group, a key of the config"),
    ("-m seed=1,2,3 model=mlp,cnn", "a sweep: one run dir per job, under multirun/"),
    ("--config-dir conf datamodule=points model=linear", "your own classes and configs (see README)"),
)
MORE = """\
Any key of the composed config is set with KEY=VALUE, every argument of Lightning's Trainer with
trainer.NAME=VALUE; --cfg job prints the composed config, --hydra-help Hydra's own flags,
`dlops --help` the other commands (report, plot, eval, predict, export, serve).
More: README.md of dlops-lightning (the package index page shows it): "Everyday use", "The config
tree", "Bring your own model and data".
"""


def sentence(lines: list[str], width: int = 80) -> str:
    """The first sentence of a comment block, cut at a word to `width` characters."""
    text = " ".join(lines)
    text = re.split(r"\.\s+(?=[A-Z])", text, maxsplit=1)[0].rstrip(".")
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + " ..."


def first_comment(text: str) -> str:
    """The first sentence of a config file's first comment (Hydra's `# @package` header skipped)."""
    block = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# @package"):
            continue
        if not line.startswith("#"):
            break
        block.append(line.lstrip("# ").strip())
    return sentence(block)


def comments_above(text: str) -> dict[str, str]:
    """`{name: first sentence of the comment block just above it}` for each top-level key `name:`
    and each defaults-list entry `- name: option` of a config file."""
    found, block = {}, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"^(?:\s*-\s*(?:optional\s+)?)?([\w/]+)\s*:", line)
        if match and block and (not line[:1].isspace() or stripped.startswith("-")):
            found.setdefault(match.group(1), sentence(block, 80))
        block = []
    return found


def _defaults(train: dict) -> dict[str, str | None]:
    chosen = {}
    for entry in train.get("defaults") or []:
        if isinstance(entry, dict):
            for key, option in entry.items():
                chosen[key.replace("optional ", "").strip()] = option
    return chosen


def help_page(search_dirs: list[Path], command: str) -> str:
    """The help page for the config folders `search_dirs` (the user's first, dlops' own last)."""
    train_file = next(d / "train.yaml" for d in [*search_dirs, PACKAGED] if (d / "train.yaml").is_file())
    train_text = train_file.read_text(encoding="utf-8")
    train = yaml.safe_load(train_text) or {}
    defaults, comments = _defaults(train), comments_above(train_text)
    groups: dict[str, dict[str, tuple[str, bool]]] = {}
    for folder in reversed(search_dirs):  # dlops' first, so that the user's of the same name replace them
        yours = folder.resolve() != PACKAGED
        for path in sorted(folder.glob("*/*.yaml")):
            if path.parent.name not in HIDDEN_GROUPS:
                groups.setdefault(path.parent.name, {})[path.stem] = (
                    first_comment(path.read_text(encoding="utf-8")), yours)
    lines = [INTRO.format(command=command),
             "Config groups: choose an option with GROUP=OPTION (* the default, + from your folder)"]
    width = max((len(o) for options in groups.values() for o in options), default=8) + 3
    for group in sorted(groups):
        if group in defaults and defaults[group] is None and group in comments:
            lines.append(f"  {group:<15}none by default: {comments[group]}")
            prefix = " " * 17
        else:
            prefix = f"  {group:<15}"
        for option, (about, yours) in sorted(groups[group].items()):
            mark = ("*" if defaults.get(group) == option else "") + ("+" if yours else "")
            lines.append(f"{prefix}{option + mark:<{width}}{about}")
            prefix = " " * 17
    keys = [k for k in train if k not in ("defaults", "hydra") and not isinstance(train[k], dict)]
    lines += ["", f"Top-level keys ({train_file.parent.name}/train.yaml: the value, then what it is for)"]
    key_width = max((len(k) for k in keys), default=8) + 2
    for key in keys:
        value = yaml.safe_dump(train[key], default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"  {key:<{key_width}}{value:<10} {comments.get(key, '')}")
    folders = ", then ".join(f"{d} ({'dlops' if d.resolve() == PACKAGED else 'yours'})" for d in search_dirs)
    examples = [f"{command} {args}" for args, _ in EXAMPLES]
    lines += ["", "Examples:"] + [f"  {example:<{max(map(len, examples)) + 3}}{about}"
                                  for example, (_, about) in zip(examples, EXAMPLES, strict=True)]
    lines += ["", f"Config folders searched: {folders}", MORE]
    return "\n".join(lines)
