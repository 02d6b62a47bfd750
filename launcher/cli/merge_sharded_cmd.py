"""``mudpuppy merge-sharded-fsdp-weights CHECKPOINT_DIR``: sharded FSDP checkpoint -> one safetensors model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("merge-sharded-fsdp-weights")
@click.argument("checkpoint_dir", type=click.Path(file_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Folder to write (default: CHECKPOINT_DIR/merged).")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help="Cast floating-point weights (default: keep the saved dtype).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Split safetensors files above this size.")
def merge_sharded(checkpoint_dir: str, output: str | None, dtype: str | None, max_shard_size: str) -> None:
    """Merge the .distcp shards of CHECKPOINT_DIR into a from_pretrained-ready folder (CPU only)."""
    from mudpuppy.runtime.parallel.merge_sharded import merge_sharded_weights

    out = merge_sharded_weights(Path(checkpoint_dir), Path(output) if output else None, dtype=dtype,
                                max_shard_size=max_shard_size)
    click.echo(f"merged weights written to {out}")
