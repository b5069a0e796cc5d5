"""Config group options named by numbers: `experiment=999` means the option "999".

Hydra parses an all-digit value as an int, and then fails inside its defaults list with a
traceback ("Config group override must be a string or a list. Got int"). Quoted, the value is
the option's name, and an unknown one gets Hydra's own message with the available options.
"""

from pathlib import Path


def quote_numeric_options(argv: list[str], conf_dirs: list[Path]) -> list[str]:
    """`argv` with every `GROUP=<digits>` (GROUP a folder in `conf_dirs`) written `GROUP='<digits>'`."""
    fixed = [argv[0]]
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if sep and value.isdigit() and "." not in group and group \
                and any((conf_dir / group).is_dir() for conf_dir in conf_dirs):
            arg = f"{key}='{value}'"
        fixed.append(arg)
    return fixed
