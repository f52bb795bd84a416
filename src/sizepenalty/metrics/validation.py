"""Input checks at the metrics API boundary: masks, label images and voxel spacing.

What the public metric functions accept (anything else raises, naming the argument):

* a mask is a 2D or 3D numpy array or torch tensor (a tensor is copied to a numpy array on the
  CPU) of dtype bool, integer or float whose values are only 0 and 1. Probabilities, logits or
  label images are not masks: threshold them first (e.g. ``prob >= 0.5``); nothing is thresholded
  silently;
* a label image is a 2D or 3D integer array or tensor with non-negative labels;
* a voxel spacing has one positive, finite entry (mm) per mask dimension.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["as_labels", "as_mask", "as_spacing", "check_connectivity", "check_same_shape"]


def _as_array(x: Any, name: str) -> np.ndarray:
    """A numpy array as given, or a torch tensor as a numpy array (detached, on the CPU)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _check_ndim(arr: np.ndarray, name: str, what: str) -> None:
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D or 3D {what}, got a {arr.ndim}D array of shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} has an empty dimension (shape {arr.shape})")


def _values(arr: np.ndarray) -> str:
    """A few of the array's distinct values, for an error message."""
    uniq = np.unique(arr)
    shown = ", ".join(f"{v:g}" for v in uniq[:6].tolist())
    return shown + (", ..." if uniq.size > 6 else "")


def as_mask(x: Any, name: str) -> np.ndarray:
    """``x`` as a boolean mask (a view of it where the dtype allows), after checking it is one.

    Args:
        x: a 2D or 3D numpy array or torch tensor of dtype bool, integer or float holding only
            the values 0 and 1.
        name: the argument's name, for the error message.

    Raises:
        TypeError: not an array or tensor, or an unsupported dtype (e.g. complex, object).
        ValueError: not 2D/3D, an empty dimension, or values other than 0 and 1 (NaN included).
    """
    arr = _as_array(x, name)
    _check_ndim(arr, name, "mask")
    kind = arr.dtype.kind
    if kind == "b":
        return arr
    if kind in "ui":
        # A min/max reduction is cheap; the mask itself then costs nothing for 1-byte dtypes.
        if arr.max() > 1 or (kind == "i" and arr.min() < 0):
            _not_binary(arr, name)
        return arr.view(bool) if arr.dtype.itemsize == 1 else arr != 0
    if kind == "f":
        nonzero = arr != 0
        if not np.all(arr[nonzero] == 1):  # NaN is nonzero and not 1
            _not_binary(arr, name)
        return nonzero
    raise TypeError(f"{name} must be a bool, integer or float mask, got dtype {arr.dtype}")


def _not_binary(arr: np.ndarray, name: str) -> None:
    raise ValueError(
        f"{name} must be a binary mask with values 0 and 1 only, got values {_values(arr)} "
        f"(dtype {arr.dtype}); threshold it first (e.g. prob >= 0.5)"
    )


def as_labels(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """``x`` as a label image (integers >= 0, 0 = background), checked.

    Args:
        x: a 2D or 3D integer numpy array or torch tensor.
        name: the argument's name, for the error message.
        n: when given, the number of instances: labels must not exceed it.
    """
    arr = _as_array(x, name)
    _check_ndim(arr, name, "label image")
    if arr.dtype.kind not in "uib":
        raise TypeError(f"{name} must be an integer label image, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False) if arr.dtype.kind == "b" else arr
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(
            f"{name} has negative labels (minimum {lo}); labels are 0 (background), 1, 2, ..."
        )
    if n is not None and hi > n:
        raise ValueError(f"{name} has label {hi} but the number of instances given is {n}")
    return arr


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """Both arrays on the same grid."""
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} shape {a.shape} != {names[1]} shape {b.shape}")


def as_spacing(spacing: Any, ndim: int, name: str = "spacing") -> tuple[float, ...]:
    """The voxel spacing as a tuple of floats: one positive, finite entry (mm) per dimension."""
    if isinstance(spacing, str | bytes):
        raise TypeError(f"{name} must be a sequence of {ndim} voxel sizes in mm, got {spacing!r}")
    if type(spacing).__module__.split(".")[0] == "torch":
        spacing = _as_array(spacing, name)
    try:
        values = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a sequence of {ndim} voxel sizes in mm, got {spacing!r}"
        ) from None
    if values.shape != (ndim,):
        shown = tuple(values.ravel().tolist()) if values.ndim else spacing
        raise ValueError(
            f"{name} must have one entry per mask dimension ({ndim} for a {ndim}D mask), "
            f"got {shown!r}"
        )
    if not all(math.isfinite(v) and v > 0 for v in values.tolist()):
        raise ValueError(
            f"{name} entries must be positive and finite (mm), got {tuple(values.tolist())}"
        )
    return tuple(values.tolist())


def check_connectivity(connectivity: Any, name: str = "connectivity") -> int:
    """A 3D connectivity of 6, 18 or 26 (in 2D: 4, 8 and 8)."""
    if connectivity not in (6, 18, 26) or isinstance(connectivity, bool):
        raise ValueError(f"{name} must be 6, 18 or 26, got {connectivity!r}")
    return int(connectivity)
