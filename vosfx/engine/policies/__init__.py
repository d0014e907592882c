"""Memory policies: what each frame of each object attends to.

:mod:`.base` holds the protocol and the metadata types a policy sees; :mod:`.sam2` and
:mod:`.rcms` the policies; :func:`make_policy` builds one from a row of the table in
:mod:`vosfx.policies`.
"""

from __future__ import annotations

import importlib

from vosfx.config import MemoryConfig
from vosfx.engine.policies.base import (
    BankView,
    Decision,
    MemoryEntry,
    MemoryPolicy,
    PolicyLog,
    Selection,
    closest_cond_frames,
)
from vosfx.engine.policies.sam2 import Sam2Policy
from vosfx.errors import ConfigError
from vosfx.policies import MEMORY_POLICIES

__all__ = [
    "BankView",
    "Decision",
    "MemoryEntry",
    "MemoryPolicy",
    "PolicyLog",
    "Sam2Policy",
    "Selection",
    "closest_cond_frames",
    "make_policy",
]


def make_policy(cfg: MemoryConfig) -> MemoryPolicy:
    """A fresh policy for one object: the class of ``cfg.policy``'s row in
    :data:`vosfx.policies.MEMORY_POLICIES`, given the ``[memory]`` options that row names."""
    spec = MEMORY_POLICIES.get(cfg.policy)
    if spec is None:
        raise ConfigError(
            f"[memory] policy: expected one of {', '.join(MEMORY_POLICIES)}, found {cfg.policy!r}"
        )
    module, _, name = spec.factory.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{kwarg: getattr(cfg, key) for key, kwarg in spec.options})
