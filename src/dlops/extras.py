"""dlops' optional stacks, installed as extras of the `dlops-lightning` distribution: the modules
each brings, and the one message for a feature chosen without its extra. Light: standard library."""

import importlib.util

DISTRIBUTION = "dlops-lightning"
# extra -> the modules it brings, by import name (pyproject.toml lists the distributions)
EXTRAS = {
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
    "optuna": ("optuna",),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "serve": ("fastapi", "uvicorn", "multipart", "onnxruntime"),
    "examples": ("sklearn",),
}


def install_line(*extras: str) -> str:
    return f"pip install '{DISTRIBUTION}[{','.join(sorted(set(extras)))}]'"


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def message(needs: dict[str, str]) -> str | None:
    """One message for the features of `needs` ({feature: extra}) whose extra is not installed, or None."""
    lacking = {feature: (extra, gone) for feature, extra in needs.items() if (gone := missing(extra))}
    if not lacking:
        return None
    parts = [f"{feature} needs {', '.join(gone)}" for feature, (_, gone) in lacking.items()]
    extras = sorted({extra for extra, _ in lacking.values()})
    return (f"{'; '.join(parts)}, not installed here: dlops installs it with its "
            f"{' and '.join(extras)} extra{'s' if len(extras) > 1 else ''}: {install_line(*extras)}")


def extra_of(module: str) -> str | None:
    """The extra that brings the top-level package of `module`, or None."""
    top = module.split(".")[0]
    return next((extra for extra, names in EXTRAS.items() if top in names), None)


def require(extra: str, feature: str) -> None:
    """Raise ConfigError naming the install line when `extra` is not installed."""
    from dlops.errors import ConfigError

    if text := message({feature: extra}):
        raise ConfigError(text)


def for_missing_module(exc: ModuleNotFoundError) -> str | None:
    """The message for an import that failed for want of an extra, or None for any other module."""
    extra = extra_of(exc.name or "")
    return message({"this": extra}) if extra else None
