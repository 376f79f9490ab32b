"""Turning numpy-laden records into plain JSON values (floats rounded for stable bytes)."""
from __future__ import annotations

import numpy as np


def jsonable(x, ndigits: int = 4):
    if isinstance(x, dict):
        return {str(k): jsonable(v, ndigits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v, ndigits) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.floating, float)):
        return round(float(x), ndigits)
    if isinstance(x, np.integer):
        return int(x)
    return x
