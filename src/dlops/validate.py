"""Check the composed config before anything heavy runs, and report every problem at once.

Types come from signatures: each key of the `trainer` node must be of the type the installed
Lightning's `Trainer` annotates, and each key of a node that builds one of dlops' own classes of
the type its `__init__` annotates (read from source by dlops.signatures, without importing them).
`SCHEMA` adds, per key path, the ranges types cannot say (`model.optimizer.lr` > 0). Keys under
`datamodule`, `model` and `model.net` are dlops' to check only when that node builds a dlops
class: a user's own classes check their own arguments, and Lightning checks the values of its own
(`trainer.accelerator=tpu` is Lightning's to accept or refuse). Then come the checks that span
keys or look outside the config: fractions, paths, and devices vs the hardware.
Torch is imported only to count GPUs, and only when the config asks for them.
"""

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlops.data.folds import fold_problems
from dlops.errors import ConfigError

_ABSENT = object()
Rule = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(low: int | None = None, high: int | None = None, also: tuple = ()) -> Rule:
    """An integer in [low, high] (either end may be open-ended), or one of `also` (e.g. -1, None)."""
    def ok(v: Any) -> bool:
        return v in also or (_is_int(v) and (low is None or v >= low) and (high is None or v <= high))
    text = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    if also:
        text += " (or " + " or ".join("null" if a is None else str(a) for a in also) + ")"
    return ok, text


def number(low: float, high: float = float("inf"), low_open: bool = False, high_open: bool = False) -> Rule:
    """A number from `low` to `high`; an open end excludes the bound itself."""
    def ok(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = v > low if low_open else v >= low
        return above and (v < high if high_open else v <= high)
    if high == float("inf"):
        return ok, f"a number {'>' if low_open else '>='} {low}"
    return ok, f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def one_of(*values: Any) -> Rule:
    """Exactly one of `values` (type included: `1` is not `true`)."""
    shown = dict.fromkeys("null" if v is None else str(v) for v in values)
    return lambda v: any(v == x and type(v) is type(x) for x in values), "one of " + ", ".join(shown)


BOOLEAN: Rule = (lambda v: isinstance(v, bool), "true or false")
FRACTION = number(0, 1, low_open=True, high_open=True)
SIZES: Rule = (lambda v: OmegaConf.is_list(v) and len(v) > 0 and all(_is_int(x) and x >= 1 for x in v),
               "a non-empty list of integers >= 1, e.g. [128,64]")

# key path -> what a valid value is
SCHEMA: dict[str, Rule] = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "seed": integer(0, 2**32 - 1),
    "test": BOOLEAN,
    "verbose": BOOLEAN,
    # any metric the model logs; one it never logs stops the run after its first validated epoch
    "monitor": (lambda v: isinstance(v, str) and v.strip() != "", "the name of a logged metric"),
    # auto: min for loss-like names, max for accuracy-like ones (dlops.rundir.metrics.infer_mode)
    "mode": one_of("min", "max", "auto"),
    "checkpoint_every_n_steps": integer(1, also=(None,)),
    "datamodule.batch_size": integer(1),
    "datamodule.val_fraction": FRACTION,
    "datamodule.test_fraction": FRACTION,
    "datamodule.split_seed": integer(0),
    "datamodule.positive_digit": one_of(None, *range(10)),
    "datamodule.image_size": integer(1, also=(None,)),
    "model.optimizer.lr": number(0, low_open=True),
    "model.optimizer.weight_decay": number(0),
    "model.optimizer.fused": one_of(None, True, False),
    "model.net.hidden_sizes": SIZES,
    "model.net.channels": SIZES,
    "model.net.hidden_size": integer(1),
    "model.net.dropout": number(0, 1, high_open=True),
    "callbacks.model_checkpoint.save_top_k": integer(-1),
    "callbacks.early_stopping.patience": integer(0),
    "logger.wandb.offline": one_of(None, True, False),
}


def _describe(value: Any) -> str:
    kind = {str: "text", bool: "a boolean", int: "an integer", float: "a number"}.get(type(value))
    shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return f"{shown!r}" + (f" ({kind})" if kind in ("text", "a boolean") else "")


# config nodes whose keys dlops checks only when the node builds one of dlops' own classes
OWNED_NODES = ("model.net", "model", "datamodule")


def _foreign(cfg: DictConfig, key: str) -> bool:
    """Whether `key` belongs to a node that builds a class of the user's, not of dlops."""
    for node in OWNED_NODES:
        if key.startswith(node + "."):
            target = OmegaConf.select(cfg, f"{node}._target_", default=None, throw_on_missing=False)
            return not str(target or "dlops.").startswith("dlops.")
    return False


PLAIN_TYPES: dict[str, Rule] = {
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "text"),
    "None": (lambda v: v is None, "null"),
    "dict": (OmegaConf.is_dict, "a mapping"),
}
LISTS = ("list", "List", "Sequence", "tuple", "Tuple")


def annotation_rule(annotation: str | None) -> Rule | None:
    """A check of a config value against a type annotation as written (`Optional[int]`,
    `int | None`, `Literal['L', 'RGB']`, `list[int]`), or None when it names anything but plain
    types (a Lightning class, a type alias): then the class itself is the judge."""
    if not annotation:
        return None
    try:
        return _rule(ast.parse(annotation, mode="eval").body)
    except (SyntaxError, ValueError):
        return None


def _rule(node: ast.expr) -> Rule | None:
    if isinstance(node, ast.Name) and node.id in PLAIN_TYPES:
        return PLAIN_TYPES[node.id]
    if isinstance(node, ast.Constant) and node.value is None:
        return PLAIN_TYPES["None"]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _any_of([node.left, node.right])
    if not isinstance(node, ast.Subscript) or not isinstance(node.value, ast.Name):
        return None
    name, inner = node.value.id, node.slice
    items = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
    if name == "Optional":
        return _any_of([*items, ast.Constant(None)])
    if name == "Union":
        return _any_of(items)
    if name == "Literal" and all(isinstance(i, ast.Constant) for i in items):
        return one_of(*(i.value for i in items))
    if name in ("dict", "Dict", "Mapping"):
        return PLAIN_TYPES["dict"]
    if name in LISTS:
        element = _rule(items[0]) if items else None
        if element is None:
            return None
        check, text = element
        return (lambda v: OmegaConf.is_list(v) and all(check(x) for x in v), f"a list ({text} each)")
    return None


def _alternatives(node: ast.expr) -> list[ast.expr]:
    """The members of a union, nested ones flattened: `Optional[Union[int, float]]` -> int, float, None."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _alternatives(node.left) + _alternatives(node.right)
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) in ("Optional", "Union"):
        items = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        return [a for item in items for a in _alternatives(item)] + \
            ([ast.Constant(None)] if node.value.id == "Optional" else [])
    return [node]


def _any_of(nodes: list[ast.expr]) -> Rule | None:
    rules = [_rule(n) for node in nodes for n in _alternatives(node)]
    if any(r is None for r in rules):
        return None
    texts = list(dict.fromkeys(text for _, text in rules))
    text = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]
    return (lambda v: any(check(v) for check, _ in rules), text)


def _is_trainer(target: str) -> bool:
    return target.startswith(("lightning.", "pytorch_lightning.")) and target.endswith(".Trainer")


def signature_rules(cfg: DictConfig) -> dict[str, Rule]:
    """{key path: rule} from the annotations of the Trainer and of the dlops classes the config builds."""
    from dlops.signatures import init_parameters, trainer_parameters

    rules = {}
    for node in ("trainer", *OWNED_NODES):
        target = OmegaConf.select(cfg, f"{node}._target_", default=None, throw_on_missing=False)
        if not isinstance(target, str):
            continue
        params = trainer_parameters() if node == "trainer" and _is_trainer(target) else \
            init_parameters(target) if target.startswith("dlops.") else None
        section = OmegaConf.select(cfg, node)
        for name, annotation in (params or {}).items():
            key = f"{node}.{name}"
            if name in section and key not in SCHEMA and not OmegaConf.is_interpolation(section, name) \
                    and (rule := annotation_rule(annotation)):
                rules[key] = rule
    return rules


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem found in `cfg`, one readable line each (empty when the config is fine)."""
    problems = []
    for key, (check, expected) in signature_rules(cfg).items():
        value = OmegaConf.select(cfg, key)
        if not check(value):
            problems.append(f"{key} must be {expected}, got {_describe(value)}")
    for key, (check, expected) in SCHEMA.items():
        if _foreign(cfg, key):
            continue
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        except Exception as exc:  # an interpolation that does not resolve
            problems.append(f"{key} cannot be resolved: {exc}")
            continue
        if value is not _ABSENT and not check(value):
            problems.append(f"{key} must be {expected}, got {_describe(value)}")
    return problems + _cross_key_problems(cfg) + device_problems(cfg)


def _cross_key_problems(cfg: DictConfig) -> list[str]:
    problems = []
    data = cfg.get("datamodule") or {}
    if _foreign(cfg, "datamodule.root"):
        data = {}  # a user's datamodule checks its own arguments
    fractions = [data.get(k) for k in ("val_fraction", "test_fraction")]
    if all(_is_number(f) for f in fractions) and sum(fractions) >= 1:
        problems.append("datamodule.val_fraction + datamodule.test_fraction must be below 1, "
                        f"got {sum(fractions):g}")
    if "folds" in data:
        problems += fold_problems(data.get("folds"), data.get("fold"))
    trainer = cfg.get("trainer") or {}
    epochs = (trainer.get("min_epochs"), trainer.get("max_epochs"))
    if all(_is_int(e) for e in epochs) and epochs[1] != -1 and epochs[0] > epochs[1]:
        problems.append(f"trainer.min_epochs ({epochs[0]}) must not exceed trainer.max_epochs ({epochs[1]})")
    if trainer.get("enable_checkpointing") is False:
        problems.append("trainer.enable_checkpointing=false is not supported: every run keeps "
                        "checkpoints/last.ckpt to resume from; to keep no best checkpoints, leave "
                        "the checkpoint callback out (callbacks=none)")
    if "root" in data:
        if OmegaConf.is_missing(cfg.datamodule, "root"):
            problems.append("datamodule.root is not set: add datamodule.root=DIR "
                            "(a folder with train/ and test/)")
        elif not Path(str(data.root)).is_dir():
            problems.append(f"datamodule.root {data.root} is not a folder")
    if data.get("source") == "torchvision" and data.get("download") is False:
        raw = Path(str(data.get("data_dir"))) / "MNIST" / "raw"
        if not raw.is_dir() or not any(raw.iterdir()):
            problems.append(f"datamodule.data_dir: MNIST IDX files are missing from {raw} and "
                            "datamodule.download=false; put them there, set datamodule.data_dir to the "
                            "folder holding MNIST/raw, or use datamodule.source=bundled")
    return problems


def device_problems(cfg: DictConfig) -> list[str]:
    """The accelerator and devices asked for, against the hardware this process can see."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    devices = OmegaConf.select(cfg, "trainer.devices", default=None)
    if accelerator in ("gpu", "cuda"):
        import torch

        visible, kind, fix = torch.cuda.device_count(), "GPU", "trainer=cpu (or trainer.accelerator=cpu)"
    elif accelerator == "mps":
        import torch

        visible, kind, fix = int(torch.backends.mps.is_available()), "Apple MPS device", "trainer=cpu"
    else:
        return []
    if visible == 0:
        return [f"trainer.accelerator={accelerator} but no {kind} is visible to this process; "
                f"use {fix}"]
    if _is_int(devices) and devices > visible:
        return [f"trainer.devices={devices} but only {visible} {kind}(s) are visible; "
                f"use trainer.devices={visible} or fewer (-1 = all)"]
    if OmegaConf.is_list(devices) and any(_is_int(d) and d >= visible for d in devices):
        return [f"trainer.devices={list(devices)} names a {kind} index >= {visible}, "
                f"the number of {kind}s visible"]
    return []


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem in `cfg`."""
    problems = config_problems(cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"the config has {len(problems)} problem(s):\n{lines}\n"
                          "Fix them on the command line (key=value) or in conf/.")
