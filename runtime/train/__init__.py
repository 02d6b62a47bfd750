"""Trainer building: config -> TrainingArguments, collator, callbacks, preemption, the recipe itself."""
