"""Package data: chat templates, sbatch/SkyPilot/Dockerfile templates, DeepSpeed JSONs, example configs."""
