"""Experiment tracking keys (wandb, mlflow, tensorboard)."""

from __future__ import annotations

from mudpuppy.launcher.config.schema.base import Section


class LoggingSection(Section):
    use_wandb: bool | None = None
    wandb_project: str | None = None
    wandb_entity: str | None = None
    wandb_name: str | None = None
    wandb_run_id: str | None = None
    wandb_mode: str | None = None
    wandb_watch: str | None = None
    wandb_log_model: str | None = None
    use_mlflow: bool | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_name: str | None = None
    mlflow_run_name: str | None = None
    hf_mlflow_log_artifacts: bool | None = None
    use_tensorboard: bool | None = None

    def report_to(self) -> list[str]:
        """Trackers to enable, following Axolotl: a project/URI name switches its tracker on."""
        out: list[str] = []
        if self.use_wandb or (self.use_wandb is None and self.wandb_project):
            out.append("wandb")
        if self.use_mlflow or (self.use_mlflow is None and self.mlflow_tracking_uri):
            out.append("mlflow")
        if self.use_tensorboard:
            out.append("tensorboard")
        return out
