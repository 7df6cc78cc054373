"""Convolutions with the signature and semantics of `jax.lax.conv_general_dilated`.

Placeholder: only the 'xla' reference implementation exists yet (issue 3 adds the hand-written ones).
"""
from jax import lax

IMPLS = ("xla",)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, *, impl="xla"):
  if impl not in IMPLS:
    raise ValueError(f"conv impl {impl!r} is not one of {IMPLS}")
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count, precision,
                                  preferred_element_type)
