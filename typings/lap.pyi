# Minimal stub for lap 0.5 (Jonker-Volgenant linear assignment) covering what streamproc uses.
# With return_cost=False, lapjv returns (x, y): x[i] is row i's column, y[j] column j's row, -1 where unassigned.
import numpy as np
from numpy.typing import ArrayLike, NDArray

def lapjv(
    cost: ArrayLike, extend_cost: bool = ..., cost_limit: float = ..., return_cost: bool = ...
) -> tuple[NDArray[np.int32], NDArray[np.int32]]: ...
