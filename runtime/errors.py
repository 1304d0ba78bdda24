"""Errors of the runtime package.

    AlphaMathError                 base of every error we raise on purpose
    ├── ConfigError                a bad preset, flag or value; the CLI prints one line, exit 2
    ├── EngineError                an engine could not load or serve a request
    │   ├── NoValueHeadError       value() asked of a model without a value head
    │   └── PromptTooLongError     the prompt does not fit the context; strategies make the node
    │                              terminal with value −1, as the original does (recoverable)
    └── ResultsError               the results file cannot be used for this run (recoverable by
                                   choosing another --output)

Search strategies turn exceptions raised while solving one problem into an `error` row
(the run goes on); only errors raised before the run starts stop the CLI.
"""

from __future__ import annotations


class AlphaMathError(Exception):
    """Base class: a message meant for a user, one line."""


class ConfigError(AlphaMathError):
    pass


class EngineError(AlphaMathError):
    pass


class NoValueHeadError(EngineError):
    pass


class PromptTooLongError(EngineError):
    pass


class ResultsError(AlphaMathError):
    pass
