"""The sandbox for every program a model writes: an OS boundary, whole-tree limits, and a trusted result channel.

One job/result protocol for every program task (scrna denoisers, kernels on every backend, future tasks): the
harness starts a :class:`Session` (or a one-shot :func:`run`) with the files the program may see, the program
answers over a framed pipe (:mod:`~sia_bench.sandbox.channel`; child side in ``kit/sandbox_child.py``), and the
harness validates every message. Modes: ``bwrap`` (default; bubblewrap namespaces) and ``process`` (no OS boundary,
only rlimits/cgroups and an in-process tripwire; chosen explicitly and recorded). The threat model is in the README.
"""

from sia_bench.sandbox.boundary import (INSIDE_KIT, INSIDE_WORK, MODES, Limits, SandboxUnavailable, check_mode,
                                        sandbox_option)
from sia_bench.sandbox.channel import ChannelError, Message
from sia_bench.sandbox.session import SandboxError, SandboxResult, Session, require_mode, run

__all__ = ["INSIDE_KIT", "INSIDE_WORK", "MODES", "ChannelError", "Limits", "Message", "SandboxError", "SandboxResult",
           "SandboxUnavailable", "Session", "check_mode", "require_mode", "run", "sandbox_option"]
