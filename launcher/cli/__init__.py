"""The ``mudpuppy`` command line.

Subcommands live in their own modules and are imported only when run (a name -> module table), so
``mudpuppy --help`` costs a click import and nothing more. ``UserError`` becomes one red line and exit 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from mudpuppy import __version__
from mudpuppy.launcher.errors import ConfigError, UserError

# name -> (module under mudpuppy.launcher.cli, attribute, one-line help shown by `mudpuppy --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "config": ("config_cmd", "config", "Show, validate or export the schema of a config."),
    "launch": ("launch_cmd", "launch", "Run a config on a backend (local, ssh, slurm...); --dry-run prints the plan."),
    "estimate": ("estimate_cmd", "estimate", "Rows, tokens, steps, FLOPs, GPU-hours and price of a config."),
    "runs": ("runs_cmd", "runs", "List runs from the run registry."),
    "status": ("status_cmd", "status", "Show the state of a run."),
    "plot": ("plot_cmd", "plot", "Plot runs' loss, eval loss, lr, grad norm and tokens/s into one PNG."),
    "logs": ("logs_cmd", "logs", "Print (or follow with -f) the output of a run."),
    "cancel": ("cancel_cmd", "cancel", "Cancel a run."),
    "backends": ("backends_cmd", "backends", "Show what each backend can do."),
    "gc": ("gc_cmd", "gc", "List (--yes: remove) bundles, run folders, venvs and clusters finished runs left."),
    "image": ("image_cmd", "image", "Render the runtime image (Dockerfile) from a config's image spec."),
    "fetch": ("fetch_cmd", "fetch", "Copy the bundled example configs (and tiny model) into a folder."),
    "preprocess": ("preprocess_cmd", "preprocess", "Tokenize and cache a config's datasets; summary, --debug, --dump."),
    "train": ("train_cmd", "train", "Fine-tune here from a config or bundle (--key value overrides)."),
    "merge-lora": ("merge_lora_cmd", "merge_lora", "Merge a trained LoRA adapter into its base model (OUT/merged)."),
    "merge-sharded-fsdp-weights": ("merge_sharded_cmd", "merge_sharded", "Merge sharded FSDP shards into safetensors."),
    "inference": ("inference_cmd", "inference", "Generate from a trained model with the training prompt format."),
    "evaluate": ("evaluate_cmd", "evaluate", "Compute the eval loss of a trained model on the config's eval data."),
    "pull": ("pull_cmd", "pull", "Copy a run's outputs (--checkpoints too) here, sha256-checked; resumable."),
    "resume": ("resume_cmd", "resume", "Continue a stopped run from its volume's newest checkpoint, on any backend."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"mudpuppy.launcher.cli.{entry[0]}")
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mudpuppy")
def cli() -> None:
    """Fine-tune a language model from one Axolotl-style YAML config, on any backend."""


def main(argv: list[str] | None = None) -> None:
    try:
        result = cli.main(args=argv, prog_name="mudpuppy", standalone_mode=False)
    except ConfigError as exc:
        for line in exc.lines():
            _error(line)
        sys.exit(exc.exit_code)
    except UserError as exc:
        _error(exc.one_line())
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _error("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


def _error(line: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + line, err=True)


def warn(line: Any) -> None:
    click.echo(click.style("warning: ", fg="yellow", bold=True) + str(line), err=True)
