"""``mudpuppy preprocess CFG``: build (or load from cache) the tokenized dataset and summarise it."""

from __future__ import annotations

import json
from typing import Any

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument, load_with_overrides


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--debug", is_flag=True, help="Print examples with trained tokens in green, masked in grey.")
@click.option("--debug-num-examples", default=3, show_default=True, help="How many examples --debug prints.")
@click.option("--dump", "dump_path", type=click.Path(dir_okay=False), default=None,
              help="Write every tokenized (unpacked) train row as JSON lines to this file.")
@click.pass_context
def preprocess(ctx: click.Context, config_path: str, debug: bool, debug_num_examples: int,
               dump_path: str | None) -> None:
    """Tokenize CONFIG's datasets (cached under dataset_prepared_path) and print a summary."""
    import datasets

    from mudpuppy.runtime.data import prepare
    from mudpuppy.runtime.tokenizer import load_tokenizer

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    cfg = load_with_overrides(config_path, ctx.args).config
    tokenizer = load_tokenizer(cfg)
    if cfg.processor_type:  # multimodal rows are rendered per batch; here every row and image is checked
        from mudpuppy.runtime.data import multimodal
        from mudpuppy.runtime.model.multimodal import load_processor

        train, evaluation, stats = multimodal.build(cfg, load_processor(cfg, tokenizer))
        click.echo(f"multimodal rows checked: {stats.train_rows} train, {stats.eval_rows} eval, "
                   f"{stats.skipped_invalid} skipped; the processor tokenizes them per batch while training "
                   "(skip_prepare_dataset, as in Axolotl)")
        return
    result = prepare(cfg, tokenizer)
    _summary(result.stats, cfg)
    from mudpuppy.runtime.data.preference import is_preference

    if is_preference(cfg):  # rl rows are text; --dump writes the token ids TRL derives from them
        if dump_path:
            from mudpuppy.runtime.data.preference.tokenized import trl_rows

            written = dump_rows(trl_rows(cfg, tokenizer, result.train), dump_path)
            click.echo(f"wrote {written} rows to {dump_path}")
        return
    if debug:
        _debug(result.train, tokenizer, debug_num_examples)
    if dump_path:
        written = dump(result.train, dump_path)
        click.echo(f"wrote {written} rows to {dump_path}")


def dump(dataset: Any, path: str) -> int:
    with open(path, "w", encoding="utf-8") as f:
        for row in dataset:
            f.write(json.dumps({k: list(row[k]) for k in ("input_ids", "attention_mask", "labels")}) + "\n")
    return len(dataset)


def dump_rows(rows: Any, path: str) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            count += 1
    return count


def _summary(stats: Any, cfg: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if stats.from_cache:
        console.print(f"[bold]loaded prepared dataset from cache[/bold] {stats.cache_dir}")
    elif stats.cache_dir:
        console.print(f"saved prepared dataset to {stats.cache_dir}")
    table = Table(title="preprocess summary", show_header=False)
    share = stats.trainable_tokens / stats.train_tokens if stats.train_tokens else 0.0
    rows: list[tuple[str, str]] = [
        ("rows in", f"{stats.rows_in:,}"),
        ("rows tokenized", f"{stats.rows_tokenized:,}"),
        ("skipped invalid", f"{stats.skipped_invalid:,}"),
        (f"dropped > {cfg.sequence_len} tokens", f"{stats.dropped_long:,}"),
        ("dropped too short", f"{stats.dropped_short:,}"),
        ("truncated", f"{stats.truncated:,}"),
        ("dropped, nothing to train", f"{stats.dropped_untrainable:,}"),
        ("deduplicated", f"{stats.deduplicated:,}"),
        ("train rows", f"{stats.train_rows:,}"),
        ("eval rows", f"{stats.eval_rows:,}"),
        ("train tokens", f"{stats.train_tokens:,}"),
        ("trainable-token share", f"{share:.1%}"),
    ]
    if stats.packing_efficiency is not None:
        rows.append(("packed bins", f"{stats.packed_bins:,}"))
        rows.append(("packing efficiency", f"{stats.packing_efficiency:.1%}"))
    rows.append(("time", f"{stats.seconds:.2f}s" + (" (cache load)" if stats.from_cache else "")))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for entry in stats.per_dataset:
        console.print(f"  {entry['path']}: {entry['type']}, {entry['rows']:,} rows"
                      + (f", {entry['skipped']} skipped" if entry.get("skipped") else ""))


def _debug(dataset: Any, tokenizer: Any, n: int) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console()
    for i in range(min(n, len(dataset))):
        row = dataset[i]
        text = Text(f"--- example {i} ({len(row['input_ids'])} tokens) ---\n")
        for tok, label in zip(row["input_ids"], row["labels"], strict=True):
            piece = tokenizer.decode([tok])
            text.append(piece, style="green" if label != -100 else "grey50")
        console.print(text)
    console.print(Text("green: trained, grey: masked (-100)"))
