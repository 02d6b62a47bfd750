"""Dataset entries (``datasets:`` / ``test_datasets:``) with Axolotl's keys and meanings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from mudpuppy.launcher.config.schema.base import Section

TrainOnEos = Literal["all", "turn", "last", "none"]


class UserDefinedFormat(Section):
    """A ``type:`` mapping: a custom instruction format (Axolotl's user-defined prompter)."""

    system_prompt: str | None = None
    system_format: str | None = None
    field_system: str | None = None
    field_instruction: str | None = None
    field_input: str | None = None
    field_output: str | None = None
    format: str | None = None
    no_input_format: str | None = None
    field: str | None = None
    # preference data (dpo/kto user_defined)
    field_prompt: str | None = None
    field_chosen: str | None = None
    field_rejected: str | None = None
    field_label: str | None = None
    prompt_format: str | None = None
    chosen_format: str | None = None
    rejected_format: str | None = None
    field_completion: str | None = None
    completion_format: str | None = None


class DatasetConfig(Section):
    path: str | None = Field(None, description="Local file/folder, https URL, s3:// or gs:// URL, or hub id.")
    type: str | UserDefinedFormat | None = Field(None, description="Prompt strategy; omit for pre-tokenized data.")
    ds_type: str | None = Field(None, description="json, csv, parquet, arrow, text; inferred from the suffix.")
    data_files: str | list[str] | None = None
    name: str | None = None
    split: str | None = None
    revision: str | None = None
    trust_remote_code: bool | None = False
    shards: int | None = None
    shards_idx: int | None = None
    preprocess_shards: int | None = None

    # completion / instruction fields
    field: str | None = None
    conversation: str | None = None
    input_format: str | None = None

    # chat_template strategy
    chat_template: str | None = None
    chat_template_jinja: str | None = None
    field_messages: str | None = None
    field_system: str | None = None
    field_tools: str | None = None
    field_thinking: str | None = None
    template_thinking_key: str | None = None
    split_thinking: bool | None = None
    message_property_mappings: dict[str, str] | None = None
    message_field_role: str | None = None
    message_field_content: str | None = None
    message_field_training: str | None = None
    message_field_training_detail: str | None = None
    roles: dict[str, list[str]] | None = None
    roles_to_train: list[str] | None = None
    train_on_eos: TrainOnEos | None = None
    train_on_eot: TrainOnEos | None = None
    train_on_inputs: bool | None = None
    drop_system_message: bool | None = None
    temperature: float | None = None

    # preference data
    field_prompt: str | None = None
    field_chosen: str | None = None
    field_rejected: str | None = None
    field_label: str | None = None

    # stepwise_supervised (process reward models)
    step_separator: str | None = None
    max_completion_length: int | None = Field(None, ge=1)
    train_on_last_step_only: bool | None = None

    def label(self) -> str:
        return self.path or "<dataset>"


class PretrainingDatasetConfig(DatasetConfig):
    """A ``pretraining_dataset`` entry: streamed, never tokenized ahead (``runtime.data.streaming``)."""

    split: str | None = "train"
    type: str | UserDefinedFormat | None = Field("pretrain", description="pretrain (windows + EOS) or an SFT type.")
    text_column: str | None = "text"
    skip: int | None = Field(None, ge=0, description="rows of the stream to skip first")


class DataSection(Section):
    datasets: list[DatasetConfig] | None = None
    pretraining_dataset: list[PretrainingDatasetConfig] | None = Field(
        None, description="Streamed pretraining data (only the first entry is read, as in Axolotl); needs max_steps.")
    streaming: bool | None = None
    streaming_multipack_buffer_size: int | None = Field(10_000, ge=1, description="rows per streamed chunk")
    pretrain_multipack_buffer_size: int | None = Field(None, ge=1, description="old name of the key above")
    pretrain_multipack_attn: bool | None = True
    pretraining_sample_concatenation: bool | None = None
    test_datasets: list[DatasetConfig] | None = None
    val_set_size: float | None = Field(
        0.0, ge=0.0, description="Held out for evaluation: a fraction below 1, or (as in Axolotl) a row count above 1."
    )
    shuffle_merged_datasets: bool | None = True
    shuffle_before_merging_datasets: bool | None = False
    dataset_prepared_path: str | None = None
    dataset_processes: int | None = Field(None, ge=1)
    dataset_num_proc: int | None = Field(None, ge=1)
    dataset_shard_num: int | None = Field(None, ge=1)
    dataset_shard_idx: int | None = Field(None, ge=0)
    dataset_exact_deduplication: bool | None = None
    skip_prepare_dataset: bool | None = False
    skip_invalid_rows: bool | None = Field(
        None, description="(mudpuppy) Skip malformed rows and report the count instead of failing."
    )

    sequence_len: int = Field(512, gt=0)
    eval_sequence_len: int | None = Field(None, gt=0)
    min_sample_len: int | None = None
    excess_length_strategy: Literal["drop", "truncate", "raise"] | None = None
    sample_packing: bool | None = None
    eval_sample_packing: bool | None = None
    pad_to_sequence_len: bool | None = None
    pad_to_multiple_of: int | None = None
    sample_packing_group_size: int | None = 100_000
    sample_packing_bin_size: int | None = 200
    sample_packing_sequentially: bool | None = Field(None, description="Pack rows in dataset order (next fit).")
    train_on_inputs: bool | None = False
    max_prompt_len: int | None = None

    @field_validator("pretraining_dataset", mode="before")
    @classmethod
    def _pretraining_path(cls, value: object) -> object:
        """Axolotl also takes a bare path (``pretraining_dataset: org/name``)."""
        return [{"path": value}] if isinstance(value, str) else value

    @field_validator("val_set_size")
    @classmethod
    def _val_set_size_leaves_training_rows(cls, value: float | None) -> float | None:
        """Axolotl reads 1.0 as 100%, which leaves nothing to train on and fails only at preprocessing."""
        if value == 1.0:
            raise PydanticCustomError(
                "val_set_all", "1.0 would hold out every row; use a fraction below 1 or a row count of 2 or more"
            )
        return value
