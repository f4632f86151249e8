"""Entry points report a user error as one line on stderr and exit status 2; tracebacks are for bugs.

``app.run(main, flags_parser=cli.flags_parser("run_train.py"))`` turns flag
errors that absl does not handle itself (an unknown ``--config.FIELD``, a
config file that does not exist or fails to load) into that line, and
:func:`fail` ends a run the same way.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn


def fail(program: str, message: str) -> NoReturn:
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _chain(error: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _message(error: BaseException) -> str:
    """An exception chain as one line."""
    text = str(error)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _unknown_field(error: BaseException, argv: Sequence[str]) -> str | None:
    """``--config.FIELD: no such config field; did you mean ...?`` for ml_collections' KeyError, else None."""
    for cause in _chain(error):
        if isinstance(cause, KeyError) and cause.args:
            lines = str(cause.args[0]).splitlines()
            field = lines[0].strip("'\"")
            flag = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.")
                         and a.split("=")[0].split(".")[-1] == field), f"--config...{field}")
            match = re.search(r'Did you mean "([^"]+)"', str(cause.args[0]))
            hint = f"; did you mean {flag.rsplit('.', 1)[0]}.{match[1]}?" if match else ""
            return f"{flag}: no such config field{hint}"
    return None


def config_error(config: Any) -> str | None:
    """The loading error that ml_collections' config flag holds instead of a config, else None."""
    try:
        error = object.__getattribute__(config, "_error")
    except AttributeError:
        return None
    return _message(error) if isinstance(error, BaseException) else str(error)


def flags_parser(program: str) -> Callable[[Sequence[str]], list[str]]:
    """absl's flag parsing, with every failure as one line and status 2."""
    from absl import flags  # noqa: PLC0415

    def parse(argv: Sequence[str]) -> list[str]:
        try:
            return flags.FLAGS(list(argv))
        except flags.Error as error:
            fail(program, str(error))
        except Exception as error:  # noqa: BLE001  (e.g. an unknown --config.FIELD raises inside the flag)
            fail(program, _unknown_field(error, argv) or _message(error))

    return parse


def check_config_flag(program: str, config: Any, path_flag: str = "--config") -> None:
    """A one-line error when the config file given to ``path_flag`` did not load."""
    error = config_error(config)
    if error is not None:
        fail(program, f"{path_flag}: {error}")

