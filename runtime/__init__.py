"""What runs in the container, identical on every backend: env contract, data, model, trainers, checkpoints.

Never imports ``mudpuppy.backends``; meets them at the bundle format, ``launcher.contract`` and exit codes.
"""
