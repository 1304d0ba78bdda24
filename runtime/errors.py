"""Errors of the runtime package.

    AlphaMathError                 base of every error we raise on purpose
    ├── ConfigError                a bad preset, flag or value; the CLI prints one line, exit 2
    ├── EngineError                an engine could not load or serve a request
    │   ├── NoValueHeadError       value() asked of a model without a value head (fatal)
    │   ├── NoLogprobsError        a likelihood-ranked search on an engine that returns no
    │   │                          token log-probabilities (fatal)
    │   ├── EngineUnavailableError the engine cannot serve any request: no server reachable, or
    │   │                          vLLM's engine core died (fatal)
    │   └── PromptTooLongError     the prompt does not fit the context; strategies make the node
    │                              terminal with value −1, as the original does (recoverable)
    └── ResultsError               the results file cannot be used for this run (recoverable by
                                   choosing another --output)

Search strategies turn exceptions raised while solving one problem into an `error` row
(the run goes on), except a *fatal* one (`fatal = True`: NoValueHeadError, NoLogprobsError,
EngineUnavailableError), which every other problem would hit too: it ends the run with its
one-line message and writes no row for it, so that a re-run once the cause is fixed solves those
problems instead of skipping them as done. Errors raised before the run starts stop the CLI the
same way.
"""

from __future__ import annotations


class AlphaMathError(Exception):
    """Base class: a message meant for a user, one line."""

    fatal: bool = False  # raised while solving, it ends the whole run instead of one problem


class ConfigError(AlphaMathError):
    pass


class EngineError(AlphaMathError):
    pass


class NoValueHeadError(EngineError):
    fatal = True  # the model is the same for every problem


class NoLogprobsError(EngineError):
    fatal = True  # the engine is the same for every problem


class EngineUnavailableError(EngineError):
    fatal = True  # no replica connects through all retries, or the engine core is dead


class PromptTooLongError(EngineError):
    pass


class ResultsError(AlphaMathError):
    pass


def user_errors() -> tuple[type[BaseException], ...]:
    """What a command line reports as one line (exit 2) rather than a traceback: our own errors
    and a path that is missing or unreadable. SandboxError is imported here, not at the top, so
    that `--help` need not load the sandbox package."""
    from sandbox.errors import SandboxError

    # DatasetError and ScoreError (evals.errors) are AlphaMathErrors. FileExistsError and
    # NotADirectoryError: an --output or --log-file below a path that is a file.
    return (AlphaMathError, SandboxError, FileNotFoundError, PermissionError, IsADirectoryError,
            FileExistsError, NotADirectoryError)


def describe_user_error(exc: BaseException) -> str:
    """The one line for an error of `user_errors()`: a path error as "PATH: reason" (Python's
    "[Errno 2] No such file or directory: 'PATH'" shows an errno no user asked for), ours as
    written."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror.lower()}"
    return str(exc)
