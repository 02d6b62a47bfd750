"""One autograd Function class per (forward, backward) compute pair, from one piece of autograd plumbing.

Each kernel (LoRA linear, GLU, RMSNorm) has a pure-torch compute pair and a Triton one with the same contract.
What autograd needs around them (what is saved, dtype and shape handling, which gradients are asked for) is the
same for both, so each kernel writes it once as a factory taking the pair, and this builds the class. Every pair
gets its own named class (``GLUFunction``, ``TritonGLUFunction``, ...) so a graph's ``grad_fn``, a profiler trace
and the tests show which one ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch


class Compute(NamedTuple):
    """The pair a Function class was built from, kept on it as ``compute`` for callers that run it unwrapped."""

    forward: Callable[..., Any]
    backward: Callable[..., Any]


def function_class(name: str, compute: Compute, doc: str, forward: Callable[..., Any],
                   backward: Callable[..., Any]) -> type[torch.autograd.Function]:
    """A ``torch.autograd.Function`` subclass called ``name`` whose staticmethods are ``forward`` / ``backward``.

    The class is credited to the module that defines ``compute.forward`` (the torch or the Triton module).
    """
    return type(name, (torch.autograd.Function,), {
        "__doc__": doc, "__module__": compute.forward.__module__, "__qualname__": name, "compute": compute,
        "forward": staticmethod(forward), "backward": staticmethod(backward),
    })
