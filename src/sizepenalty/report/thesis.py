"""The thesis's published results (proprietary cohort and ISLES 2022), for side-by-side display only.

Different data: the thesis trained on a private stroke cohort (5 folds) and an ISLES 2022 split for
up to 400 epochs on a GPU; a study run with this package on other data, or on the synthetic demo,
is not expected to reproduce these numbers.
"""

from __future__ import annotations

COLUMNS = ("Dice", "FP", "Missed", "Det.", "RVE", "PQ", "SQ", "RQ", "ASSD")

# Table 5.1: proprietary cohort, 5-fold means.
TABLE_5_1: dict[str, tuple[float, ...]] = {
    "D": (0.7277, 1.59, 6.28, 0.5135, 0.2726, 0.2972, 0.6589, 0.4001, 4.0142),
    "D+T": (0.7155, 1.96, 6.32, 0.5375, 0.2936, 0.2921, 0.6352, 0.3966, 4.2491),
    "DTF": (0.7315, 1.93, 6.15, 0.5293, 0.2777, 0.2903, 0.6552, 0.3873, 3.9814),
    "DTS": (0.7268, 2.07, 6.03, 0.5368, 0.2745, 0.2940, 0.6424, 0.4022, 3.5665),
    "F": (0.7144, 2.41, 6.38, 0.5227, 0.2778, 0.2590, 0.6110, 0.3429, 4.7535),
    "F+D": (0.7229, 1.62, 6.16, 0.5309, 0.3573, 0.2883, 0.6584, 0.3813, 3.6349),
    "F+S": (0.6290, 1.89, 7.59, 0.4389, 0.3642, 0.1607, 0.4838, 0.2330, 3.3632),
    "FSD": (0.7204, 1.79, 6.24, 0.5359, 0.3095, 0.2763, 0.6407, 0.3730, 3.9299),
    "S": (0.0067, 112.97, 3.20, 0.7823, 3441.0637, 0.0000, 0.0055, 0.0000, 63.3154),
    "S+D": (0.7310, 1.75, 6.26, 0.5234, 0.3014, 0.2958, 0.6583, 0.3916, 3.7925),
    "S+T": (0.7334, 1.99, 5.97, 0.5488, 0.2954, 0.2873, 0.6501, 0.3923, 3.3583),
    "T": (0.7142, 2.16, 5.85, 0.5576, 0.3677, 0.2754, 0.6398, 0.3755, 3.8228),
    "T+F": (0.7351, 1.60, 5.94, 0.5544, 0.2973, 0.2985, 0.6578, 0.4017, 3.3165),
    "TFS": (0.7212, 2.21, 5.78, 0.5463, 0.3105, 0.2740, 0.6391, 0.3705, 4.2837),
}

# Table 5.3: ISLES 2022 held-out split (and the epoch of the best checkpoint).
TABLE_5_3: dict[str, tuple[float, ...]] = {
    "DTF": (0.7503, 0.84, 6.16, 0.6839, 0.2618, 0.3486, 0.6569, 0.4712, 1.6417),
    "DTS": (0.7514, 0.42, 7.42, 0.6091, 0.2757, 0.3389, 0.6596, 0.4440, 1.5659),
    "FSD": (0.7774, 0.68, 7.21, 0.6475, 0.2478, 0.3882, 0.6801, 0.5074, 1.4994),
    "TFS": (0.7472, 0.79, 7.21, 0.6543, 0.2562, 0.3600, 0.6791, 0.4999, 1.6486),
}


def table_5_2(
    baseline: str = "DTF", candidate: str = "DTS"
) -> dict[str, tuple[float, float, float]]:
    """Table 5.2 (baseline vs candidate on the proprietary cohort) derived from Table 5.1:
    column -> (baseline, candidate, candidate - baseline)."""
    b, c = TABLE_5_1[baseline], TABLE_5_1[candidate]
    return {col: (x, y, y - x) for col, x, y in zip(COLUMNS, b, c)}
