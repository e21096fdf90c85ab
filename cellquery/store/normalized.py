"""The `normalized` layer's values as the Census builder stores them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cellquery.cellxgene.inclusion import length_scaled, normalized, row_sums
from cellquery.store.sources import Included

KEPT_MANTISSA_BITS = 15  # of normalized values (the builder's _roundHalfToEven)


def census_normalized(counts: sp.csr_matrix, part: Included, block_rows: np.ndarray) -> np.ndarray:
    """A block's `normalized` values as the builder stores them, in the order of `counts.tocoo()`: rounded to
    15 mantissa bits (half to even), a value rounded to zero kept as the smallest float32."""
    full_gene = part.full_gene[np.searchsorted(part.rows, block_rows)]
    scaled = length_scaled(counts, part.genes["feature_length"].to_numpy(), full_gene)
    values = normalized(scaled, row_sums(scaled))
    rounded = round_half_to_even(values.tocoo().data, KEPT_MANTISSA_BITS)
    rounded[rounded == 0] = np.finfo(np.float32).smallest_subnormal
    return rounded


def round_half_to_even(values: np.ndarray, keep_bits: int) -> np.ndarray:
    """float32 values with only `keep_bits` of their 23 mantissa bits (what the Census keeps)."""
    drop = np.finfo(np.float32).nmant - keep_bits
    bits = values.astype(np.float32).view(np.int32).copy()
    bits += ((bits >> drop) & 1) + ((1 << (drop - 1)) - 1)
    bits &= ~((1 << drop) - 1)
    return bits.view(np.float32)
