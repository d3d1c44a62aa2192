"""The synthetic preference lab: text pairs whose true preference is known (docs/methods.md s1, s5).

`synthetic_scalar`: a hidden scalar reward r*(text) over interpretable attributes, graded margins,
every pair carries true_p = sigmoid(r*_w - r*_l). `synthetic_cyclic`: triples A > B > C > A, each
pair decided by a majority of three attributes (a Condorcet cycle), which no scalar reward can fit.
"""

from prefalign.core.synthetic.generator import (
    CYCLIC_SOURCE,
    SCALAR_SOURCE,
    SyntheticConfig,
    cyclic_pairs,
    generate_cyclic,
    generate_scalar,
    hidden_reward,
    response_attributes,
)

__all__ = [
    "CYCLIC_SOURCE",
    "SCALAR_SOURCE",
    "SyntheticConfig",
    "cyclic_pairs",
    "generate_cyclic",
    "generate_scalar",
    "hidden_reward",
    "response_attributes",
]
