"""Shell completion for the `dlops` command: `eval "$(dlops completion bash)"`.

The script completes the subcommands and their flags (taken from the argument parser, so it
follows `dlops --help`), and after `dlops train` asks Hydra's own completion, through
`dlops train -sc query=bash`, for the config groups, options and keys of the folders that
`dlops train` would search (the `--config-dir` on the line, else ./conf, then dlops' own).
"""

import argparse
import re

TRAIN_FLAGS = ("--config-dir", "--multirun", "-m", "--cfg", "--resolve", "--package", "--info",
               "--help", "--hydra-help", "--config-name")
SCRIPT = r"""# dlops completion for bash: eval "$(dlops completion bash)" (e.g. in ~/.bashrc)
_dlops_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "__COMMANDS__" -- "$cur"))
        return
    fi
    local command=${COMP_WORDS[1]} flags=""
    case "$command" in
__CASES__
    esac
    case "${COMP_WORDS[COMP_CWORD-1]}" in
        --config-dir|-cd|--out|--curves|--html) return ;;  # a path: the shell's own completion
    esac
    if [[ "$command" == train && "$cur" != -* ]]; then
        # Hydra completes config groups, options and keys; the folder flags go to it as given
        local i dirs=() line="dlops"
        for (( i = 2; i <= COMP_CWORD; i++ )); do
            line+=" ${COMP_WORDS[i]}"
            if [[ "${COMP_WORDS[i]}" == --config-dir || "${COMP_WORDS[i]}" == -cd ]]; then
                dirs+=(--config-dir "${COMP_WORDS[i+1]}")
            elif [[ "${COMP_WORDS[i]}" == --config-dir=* ]]; then
                dirs+=("${COMP_WORDS[i]}")
            fi
        done
        local choices
        choices=$(COMP_LINE="$line" COMP_POINT=${#line} "${COMP_WORDS[0]}" train "${dirs[@]}" \
            -sc query=bash 2>/dev/null)
        COMPREPLY=($(compgen -o nospace -W "$choices" -- "$cur"))
        [[ ${#COMPREPLY[@]} == 1 && "${COMPREPLY[0]}" != *= ]] && compopt +o nospace 2>/dev/null
        return
    fi
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o default -o nospace -F _dlops_complete dlops
"""


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    """The flags a parser's help names (`--ckpt`, `-h`, ...)."""
    return list(dict.fromkeys(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", parser.format_help())))


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion script for the `dlops` command that `parser` parses."""
    commands: dict[str, argparse.ArgumentParser] = parser.get_default("subcommands")
    cases = [f'        {name}) flags="{" ".join(TRAIN_FLAGS if name == "train" else flags_of(sub))}" ;;'
             for name, sub in commands.items()]
    top = [*commands, "--help", "--version"]
    return SCRIPT.replace("__COMMANDS__", " ".join(top)).replace("__CASES__", "\n".join(cases))
