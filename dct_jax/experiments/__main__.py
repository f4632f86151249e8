"""``python -m dct_jax.experiments NAME --steps=N --output=DIR``: see :mod:`dct_jax.experiments.command`."""

from dct_jax.experiments import command

command.run_command()
