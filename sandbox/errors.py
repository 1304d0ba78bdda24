"""Errors raised by the sandbox package.

```
Exception
└── SandboxError                 base class; never raised for what the *user code* did
    └── SandboxUnavailable       the backend cannot be used on this machine (missing binary,
                                 user namespaces disabled, unimplemented backend); not
                                 recoverable by retrying — the message names the exact fix
```

What untrusted code does (raising, looping, eating memory, crashing its interpreter) is never an
exception here: it comes back as an `ExecResult` whose `error` is the observation the model sees.
`SandboxError` is only for problems with the sandbox itself.
"""

from __future__ import annotations

__all__ = ["SandboxError", "SandboxUnavailable"]


class SandboxError(Exception):
    """Base class for problems with the sandbox machinery itself."""


class SandboxUnavailable(SandboxError):
    """The chosen backend cannot run here; `str(exc)` tells the user how to fix it."""
