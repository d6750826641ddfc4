"""Attention-sink detection: image tokens with outlying hidden-state norm or attention share.

Family-agnostic: instead of VisAttnSink's hand-picked "sink dimensions" of one model, a token is
a sink at a layer when its hidden-state L2 norm, or its share of the layer's image attention, is
an outlier among that layer's image tokens by the robust (modified) z-score of Iglewicz and
Hoaglin::

    z = (x - median(x)) / (1.4826 * MAD),    MAD = median(|x - median(x)|)

(1.4826 makes the MAD a consistent estimate of the standard deviation for normal data). When
more than half the tokens share one value the MAD is 0 and ``1.2533 * mean(|x - median(x)|)``
is used instead; when that is 0 too every z is 0. The default threshold 3.5 is theirs. Only
large values count (sinks are outliers upwards).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_THRESHOLD = 3.5
SINK_COLUMNS = ["layer", "image_pos", "tile", "row", "col", "kind", "norm", "norm_z", "share", "share_z", "by"]


def robust_z(values) -> np.ndarray:
    """Return the robust z-scores of ``values`` along the last axis (same shape, float)."""
    x = np.asarray(values, dtype=float)
    centred = x - np.median(x, axis=-1, keepdims=True)
    deviation = np.abs(centred)
    scale = 1.4826 * np.median(deviation, axis=-1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.2533 * deviation.mean(axis=-1, keepdims=True))
    return np.divide(centred, scale, out=np.zeros_like(centred), where=scale > 0)


def detect_sinks(norms, shares, layers, patches: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Return one row per (layer, image token) flagged as an attention sink.

    Args:
        norms: ``(n_layers, n_image)`` L2 norms of the image tokens' hidden states entering each
            layer.
        shares: ``(n_layers, n_image)`` each token's share of the layer's image attention (rows
            sum to 1).
        layers: ``(n_layers,)`` the layer indices of the rows.
        patches: ``PreparedInputs.patches`` (one row per image token, in the same order).
        threshold: robust z-score above which a token is flagged.

    Returns:
        DataFrame with columns ``SINK_COLUMNS``; ``by`` is ``"norm"``, ``"attention"`` or
        ``"both"``. Empty (with those columns) when nothing is flagged.
    """
    norms, shares = np.asarray(norms, dtype=float), np.asarray(shares, dtype=float)
    norm_z, share_z = robust_z(norms), robust_z(shares)
    by_norm, by_share = norm_z > threshold, share_z > threshold
    li, ti = np.nonzero(by_norm | by_share)
    by = np.where(by_norm[li, ti] & by_share[li, ti], "both", np.where(by_norm[li, ti], "norm", "attention"))
    frame = pd.DataFrame({
        "layer": np.asarray(layers)[li],
        "image_pos": patches["position"].to_numpy()[ti],
        "tile": patches["tile"].to_numpy()[ti],
        "row": patches["row"].to_numpy()[ti],
        "col": patches["col"].to_numpy()[ti],
        "kind": patches["kind"].to_numpy()[ti],
        "norm": norms[li, ti],
        "norm_z": norm_z[li, ti],
        "share": shares[li, ti],
        "share_z": share_z[li, ti],
        "by": by,
    }, columns=SINK_COLUMNS)
    return frame.reset_index(drop=True)
