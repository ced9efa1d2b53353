"""Counting the aten operators a piece of code dispatches (forward and backward), for tests that pin the structure
of the hot path (GEMMs per block, what activation checkpointing recomputes)."""

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode


class CountOperators(TorchDispatchMode):
    """`with CountOperators() as counted: ...`, then `counted.counts["addmm"]`: calls per operator name."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))
