"""Seeded generator of real-looking preference pairs with a known truth.

A response is assembled from templated sentences, and each kind of sentence moves one
interpretable attribute:

- helpfulness: how many distinct concrete tips for the prompt's topic it gives (0..3);
- correctness: +1 if it states the topic's fact correctly, -1 if it states it wrongly, 0 if
  it hedges (a vague sentence) or says nothing;
- verbosity: how many filler sentences it carries (0..3) -- longer, never better;
- tone: +1 for a friendly closing, -1 for a dismissive one, 0 for none.

The hidden reward is linear in the attributes (weights from configuration):
    r*(y) = w_help * helpfulness + w_correct * correctness - w_verbose * verbosity + w_tone * tone
and is a function of the TEXT (`hidden_reward` parses the sentences back), so it can also judge
responses a policy generates (the ground-truth judge of docs/methods.md s5, "Win rate").

Labels (a decision, documented in docs/evaluation.md): chosen is the response with the higher
r*, margin = r*_w - r*_l > 0, p_chosen = true_p = sigmoid(margin / temperature) (docs/methods.md s1,
"synthetic ground truth"). Labels are NOT sampled: the source reports its margin the way a
rater with a score does, so calibration against true_p measures whether a model recovers the
true probability, and a loss that ignores margins (BT) has strictly less information than one
that uses them (MMPO) -- the claim the scientific checks test.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from prefalign.core.feedback.pairs import assign_split
from prefalign.core.schema import conform_to_pairs_schema, pair_id_of, prompt_id_of, stable_hash

# The lab's source names: the one place they are written. The feedback pipeline generates a source
# of each name (feedback.sources.<name> holds its parameters); the evaluation scores each with its truth.
SCALAR_SOURCE = "synthetic_scalar"  # a hidden scalar reward r* over the text: graded margins, true_p
CYCLIC_SOURCE = "synthetic_cyclic"  # A > B > C > A triples decided by a majority of three attributes

# (topic, question forms, tips, correct fact, wrong fact, vague fact)
_TOPICS: list[dict[str, Any]] = [
    {
        "topic": "sleep",
        "questions": ["How can I sleep better at night?", "What helps with falling asleep faster?"],
        "tips": [
            "Keep a fixed wake-up time, even on weekends.",
            "Avoid caffeine after two in the afternoon.",
            "Keep your bedroom dark, quiet and cool.",
            "Put screens away an hour before bed.",
        ],
        "correct": "Most adults need seven to nine hours of sleep per night.",
        "wrong": "Most adults need only three to four hours of sleep per night.",
        "vague": "How much sleep people need varies a lot.",
    },
    {
        "topic": "python",
        "questions": ["How do I read a CSV file in Python?", "What is the easiest way to load tabular data in Python?"],
        "tips": [
            "Use the built-in csv module and open the file with newline=''.",
            "For analysis, polars.read_csv or pandas.read_csv load it into a table.",
            "Pass the encoding explicitly if the file is not UTF-8.",
            "Check the header row before trusting the column names.",
        ],
        "correct": "In Python, list indices start at zero.",
        "wrong": "In Python, list indices start at one.",
        "vague": "Indexing rules differ between languages.",
    },
    {
        "topic": "running",
        "questions": ["How should a beginner start running?", "What is a safe way to get into jogging?"],
        "tips": [
            "Alternate one minute of running with two minutes of walking.",
            "Increase your weekly distance by about ten percent at most.",
            "Run at a pace where you can still hold a conversation.",
            "Take at least one rest day between runs at first.",
        ],
        "correct": "A marathon is about 42 kilometres long.",
        "wrong": "A marathon is about 12 kilometres long.",
        "vague": "Race distances come in many lengths.",
    },
    {
        "topic": "bread",
        "questions": ["How do I bake a simple loaf of bread?", "Any advice for my first homemade bread?"],
        "tips": [
            "Weigh the flour instead of using cups.",
            "Let the dough rise until it has roughly doubled.",
            "Bake until the loaf sounds hollow when tapped underneath.",
            "Let the bread cool for an hour before slicing it.",
        ],
        "correct": "Yeast produces carbon dioxide, which makes the dough rise.",
        "wrong": "Salt produces the gas that makes the dough rise.",
        "vague": "Several ingredients play some role in rising.",
    },
    {
        "topic": "budget",
        "questions": ["How can I start saving money each month?", "What is a good way to build a personal budget?"],
        "tips": [
            "Write down every expense for one month first.",
            "Move a fixed amount to savings on the day you are paid.",
            "Cancel subscriptions you have not used in the last month.",
            "Keep an emergency fund of three to six months of expenses.",
        ],
        "correct": "Compound interest means you also earn interest on earlier interest.",
        "wrong": "Compound interest means the interest rate doubles every year.",
        "vague": "Interest can work in different ways.",
    },
    {
        "topic": "plants",
        "questions": ["How do I keep my houseplants alive?", "Why do my indoor plants keep dying?"],
        "tips": [
            "Water only when the top two centimetres of soil are dry.",
            "Use pots with a drainage hole.",
            "Place most plants near a bright window without harsh direct sun.",
            "Wipe dust off the leaves every few weeks.",
        ],
        "correct": "Plants use sunlight to turn carbon dioxide and water into sugar.",
        "wrong": "Plants get all of their food from the soil, not from light.",
        "vague": "Plants need a number of things to grow.",
    },
    {
        "topic": "email",
        "questions": ["How do I write a professional email?", "Can you help me write emails that get answered?"],
        "tips": [
            "Put the request in the first two sentences.",
            "Use a subject line that says what you need and by when.",
            "Keep it under five short paragraphs.",
            "End with one clear next step.",
        ],
        "correct": "BCC recipients are hidden from the other recipients.",
        "wrong": "BCC recipients are shown to everyone on the email.",
        "vague": "Email fields behave in various ways.",
    },
    {
        "topic": "tea",
        "questions": ["How do I brew a good cup of green tea?", "Why does my green tea taste bitter?"],
        "tips": [
            "Use water around 80 degrees Celsius, not boiling.",
            "Steep for two to three minutes.",
            "Use about two grams of leaves per cup.",
            "Remove the leaves once the time is up.",
        ],
        "correct": "Green and black tea come from the same plant, Camellia sinensis.",
        "wrong": "Green tea and black tea come from two unrelated plants.",
        "vague": "Teas come from a range of sources.",
    },
]
_OPENERS = ["Of course.", "Sure, here is what I would suggest.", "Good question.", "Here are some thoughts."]
_FILLER = [
    "There are many different things that one could consider here.",
    "It is worth noting that everyone's situation is different in many ways.",
    "This is a topic that a lot of people think about quite often.",
    "In general, it really depends on a variety of factors and circumstances.",
]
_FRIENDLY = "I hope this helps, and good luck!"
_DISMISSIVE = "Honestly, you could have looked this up yourself."
_PERSONAS = ["", "I'm a complete beginner. ", "Quick question: ", "My friend asked me this and I wasn't sure. ",
             "Hi! ", "I'm a student. ", "Sorry if this is basic. ", "I keep getting this wrong. "]
_SUFFIXES = ["", " Thanks!", " I have already tried a few things.", " What would you recommend?"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and hidden-reward weights; built from `feedback.sources.synthetic_*` parameters."""

    n_prompts: int = 40
    responses_per_prompt: int = 4
    max_pairs_per_prompt: int = 6
    weights: dict[str, float] = field(
        default_factory=lambda: {"helpfulness": 1.0, "correctness": 1.5, "verbosity": 0.5, "tone": 0.75}
    )
    temperature: float = 1.0  # true_p = sigmoid(margin / temperature)
    min_margin: float = 0.25  # pairs with |r*_a - r*_b| below this are skipped (near-ties carry no label)
    n_triples: int = 30
    cyclic_strength: float = 4.0  # cyclic pairs: true_p = sigmoid(cyclic_strength), one attribute vote apart
    # the feedback pipeline's split rule (core/feedback/pairs.py assign_split), so a standalone
    # table and the pairs table agree; the feedback pipeline re-assigns it from feedback.split anyway
    split: dict[str, Any] = field(default_factory=lambda: {"ratios": {"train": 0.8, "val": 0.1, "test": 0.1},
                                                           "salt": "prefalign-split-v1"})
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, seed: int | None = None) -> SyntheticConfig:
        """The configuration from a ``feedback.sources.synthetic_*`` parameter block.

        Args:
            params: the source's block; the feedback pipeline's keys ``enabled``, ``feedback`` and
                ``signal`` are ignored, every other key must be a field of this class. None = defaults.
            seed: the run's seed, used when the block gives no ``seed`` of its own.

        Returns:
            The configuration.

        Raises:
            ValueError: a key that is not a field, or ``weights`` lacking one of helpfulness,
                correctness, verbosity, tone.
        """
        params = dict(params or {})
        for key in ("enabled", "feedback", "signal"):  # the feedback pipeline's keys for every source
            params.pop(key, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown synthetic parameter(s) {unknown}; known keys are {sorted(known)}")
        if seed is not None and "seed" not in params:
            params["seed"] = seed
        config = cls(**params)
        attributes = {"helpfulness", "correctness", "verbosity", "tone"}
        missing, extra = attributes - set(config.weights), sorted(set(config.weights) - attributes)
        if missing:
            raise ValueError(f"synthetic weights lack {sorted(missing)}; give all four attribute weights")
        if extra:  # hidden_reward reads the four attributes only: another weight would be silently unused
            raise ValueError(f"synthetic weights {extra} are not attributes; the weights are {sorted(attributes)}")
        for name, weight in config.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"synthetic weights.{name}={weight!r} must be a number")
        return config


# ---------------------------------------------------------------------------------------------
# Text <-> attributes
# ---------------------------------------------------------------------------------------------
def _topic_of_prompt(prompt: str) -> dict[str, Any] | None:
    for topic in _TOPICS:
        if any(q in prompt for q in topic["questions"]):
            return topic
    return None


def compose_response(topic: dict[str, Any], rng: random.Random, helpfulness: int, correctness: int,
                     verbosity: int, tone: int) -> str:
    """Assemble a response with exactly the given attribute levels (sentence order shuffled a bit).

    Args:
        topic: one entry of the topic table (its ``tips``, ``correct``, ``wrong`` and ``vague`` sentences).
        rng: the seeded generator (consumed: the call advances it).
        helpfulness: number of distinct tips, 0..3.
        correctness: +1 correct fact, -1 wrong fact, 0 a vague sentence or nothing.
        verbosity: number of filler sentences, 0..3.
        tone: +1 friendly closing, -1 dismissive closing, 0 none.

    Returns:
        The response text; ``response_attributes`` reads the same levels back from it.
    """
    body: list[str] = rng.sample(topic["tips"], helpfulness)
    fact = {1: topic["correct"], -1: topic["wrong"], 0: topic["vague"] if rng.random() < 0.5 else None}[correctness]
    if fact is not None:
        body.insert(rng.randint(0, len(body)), fact)
    for filler in rng.sample(_FILLER, verbosity):
        body.insert(rng.randint(0, len(body)), filler)
    closing = {1: [_FRIENDLY], -1: [_DISMISSIVE], 0: []}[tone]
    return " ".join([rng.choice(_OPENERS), *body, *closing])


def response_attributes(prompt: str, response: str) -> dict[str, int]:
    """Read the attributes back from any text (a policy's generation included).

    Unknown sentences count for nothing, so gibberish scores 0 on every attribute.

    Args:
        prompt: the prompt (its question picks the topic; an unknown prompt has no tips or fact).
        response: any response text.

    Returns:
        ``{"helpfulness": 0..4, "correctness": -1..1, "verbosity": 0..4, "tone": -1..1}`` (the generator
        itself uses at most 3 tips and 3 fillers; other text may hold all 4 of each).
    """
    topic = _topic_of_prompt(prompt)
    tips = topic["tips"] if topic else []
    correctness = 0
    if topic and topic["correct"] in response:
        correctness += 1
    if topic and topic["wrong"] in response:
        correctness -= 1
    return {
        "helpfulness": sum(tip in response for tip in tips),
        "correctness": correctness,
        "verbosity": sum(f in response for f in _FILLER),
        "tone": int(_FRIENDLY in response) - int(_DISMISSIVE in response),
    }


def hidden_reward(prompt: str, response: str, weights: dict[str, float]) -> float:
    """r*(x, y): the hidden scalar reward (module docstring), computed from the text.

    r*(y) = w_help * helpfulness + w_correct * correctness - w_verbose * verbosity + w_tone * tone
    (docs/methods.md s1 "ground_truth", s5).

    Args:
        prompt: the prompt.
        response: the response text (any text, a policy's generation included).
        weights: ``{"helpfulness", "correctness", "verbosity", "tone"}`` -> weight (reward units per level).

    Returns:
        r*(x, y), in the synthetic reward's units (the margin unit of synthetic pairs).
    """
    a = response_attributes(prompt, response)
    return (weights["helpfulness"] * a["helpfulness"] + weights["correctness"] * a["correctness"]
            - weights["verbosity"] * a["verbosity"] + weights["tone"] * a["tone"])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _make_prompt(rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    topic = _TOPICS[index % len(_TOPICS)]
    return rng.choice(_PERSONAS) + rng.choice(topic["questions"]) + rng.choice(_SUFFIXES), topic


def with_split(frame: pl.DataFrame, split: dict[str, Any]) -> pl.DataFrame:
    """Add `split` by the feedback pipeline's rule (a stable hash of prompt_id).

    Args:
        frame: a table with a ``prompt_id`` column.
        split: ``{"ratios": {split: fraction}, "salt": str}`` (core/feedback/pairs.py ``assign_split``).

    Returns:
        The frame with a ``split`` column (train / val / test).
    """
    return frame.with_columns(split=assign_split(frame["prompt_id"], split["ratios"], str(split.get("salt", ""))))


def _pairs_frame(rows: list[dict[str, Any]], config: SyntheticConfig) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema_overrides={"margin": pl.Float64, "true_p": pl.Float64})
    frame = with_split(frame, config.split)
    return conform_to_pairs_schema(frame).unique(subset="pair_id", keep="first", maintain_order=True)


# ---------------------------------------------------------------------------------------------
# (a) synthetic_scalar
# ---------------------------------------------------------------------------------------------
def generate_scalar(config: SyntheticConfig) -> pl.DataFrame:
    """Pairs in the pairs schema (source synthetic_scalar) with graded margins and true_p.

    Each prompt gets ``responses_per_prompt`` responses with random attribute levels; up to
    ``max_pairs_per_prompt`` pairs whose reward gap is at least ``min_margin`` are kept, oriented so
    chosen has the higher r*; margin = r*_w - r*_l and p_chosen = true_p = sigmoid(margin / temperature)
    (docs/methods.md s1, "ground_truth").

    Args:
        config: sizes, weights, temperature, split rule and seed.

    Returns:
        A pairs table (``PAIRS_SCHEMA``), signal ``ground_truth``, one row per distinct pair_id.
    """
    rng = random.Random(f"{SCALAR_SOURCE}:{config.seed}")
    rows: list[dict[str, Any]] = []
    for i in range(config.n_prompts):
        prompt, topic = _make_prompt(rng, i)
        responses = []
        for _ in range(config.responses_per_prompt):
            text = compose_response(topic, rng, helpfulness=rng.randint(0, 3), correctness=rng.choice([-1, 0, 1]),
                                    verbosity=rng.randint(0, 3), tone=rng.choice([-1, 0, 0, 1]))
            responses.append((text, hidden_reward(prompt, text, config.weights)))
        candidates = [(a, b) for a in range(len(responses)) for b in range(a + 1, len(responses))]
        rng.shuffle(candidates)
        kept = 0
        for a, b in candidates:
            if kept >= config.max_pairs_per_prompt:
                break
            (text_a, r_a), (text_b, r_b) = responses[a], responses[b]
            if abs(r_a - r_b) < config.min_margin or text_a == text_b:
                continue
            (chosen, r_w), (rejected, r_l) = sorted([(text_a, r_a), (text_b, r_b)], key=lambda t: -t[1])
            true_p = _sigmoid((r_w - r_l) / config.temperature)
            rows.append(_row(prompt, chosen, rejected, r_w - r_l, true_p, SCALAR_SOURCE))
            kept += 1
    return _pairs_frame(rows, config)


def _row(prompt: str, chosen: str, rejected: str, margin: float, true_p: float, source: str) -> dict[str, Any]:
    prompt_id = prompt_id_of(prompt)
    return {
        "pair_id": pair_id_of(prompt, chosen, rejected), "prompt_id": prompt_id, "prompt": prompt,
        "chosen": chosen, "rejected": rejected, "margin": margin, "p_chosen": true_p,
        "source": source, "feedback": "synthetic", "signal": "ground_truth", "true_p": true_p,
    }


# ---------------------------------------------------------------------------------------------
# (b) synthetic_cyclic
# ---------------------------------------------------------------------------------------------
# Attribute levels (helpfulness tips, correctness level, concision level) of A, B, C: a Latin
# square, so each pair is won on two of three attributes by a different pair of attributes:
#   A > B on helpfulness and correctness; B > C on helpfulness and concision;
#   C > A on correctness and concision.  Hence A > B > C > A (a Condorcet cycle).
_CYCLE_LEVELS = {"A": (3, 2, 1), "B": (2, 1, 3), "C": (1, 3, 2)}
_CORRECTNESS_OF_LEVEL = {1: -1, 2: 0, 3: 1}
_FILLERS_OF_CONCISION = {1: 3, 2: 1, 3: 0}
_DECIDED_BY = {("A", "B"): "helpfulness+correctness", ("B", "C"): "helpfulness+concision",
               ("C", "A"): "correctness+concision"}


def majority_winner(levels_a: tuple[int, int, int], levels_b: tuple[int, int, int]) -> int:
    """+1 if a wins on more attributes than b, -1 if b does, 0 on a tie (the cyclic rule).

    Args:
        levels_a: a's (helpfulness, correctness, concision) levels.
        levels_b: b's levels, same order.

    Returns:
        +1, -1 or 0.
    """
    votes = sum((x > y) - (x < y) for x, y in zip(levels_a, levels_b))
    return (votes > 0) - (votes < 0)


def generate_cyclic(config: SyntheticConfig) -> pl.DataFrame:
    """The triples table: one row per triple, response_a > response_b > response_c > response_a.

    Args:
        config: ``n_triples``, split rule and seed.

    Returns:
        One row per triple: triple_id, prompt_id, prompt, response_a, response_b, response_c, cycle, split.

    Raises:
        AssertionError: two of a triple's responses came out identical (an invariant; cannot happen
            with the fixed distinct attribute levels).
    """
    rng = random.Random(f"{CYCLIC_SOURCE}:{config.seed}")
    rows = []
    for i in range(config.n_triples):
        prompt, topic = _make_prompt(rng, i)
        texts = {}
        for name, (helpful, correct, concise) in _CYCLE_LEVELS.items():
            texts[name] = compose_response(topic, rng, helpfulness=helpful, correctness=_CORRECTNESS_OF_LEVEL[correct],
                                           verbosity=_FILLERS_OF_CONCISION[concise], tone=0)
        if len(set(texts.values())) < 3:  # cannot happen with distinct levels; guard the invariant
            raise AssertionError("cyclic responses must differ")
        prompt_id = prompt_id_of(prompt)
        rows.append({
            "triple_id": stable_hash("triple", prompt, texts["A"], texts["B"], texts["C"]),
            "prompt_id": prompt_id, "prompt": prompt,
            "response_a": texts["A"], "response_b": texts["B"], "response_c": texts["C"],
            "cycle": "a>b (helpfulness+correctness), b>c (helpfulness+concision), c>a (correctness+concision)",
        })
    return with_split(pl.DataFrame(rows), config.split).unique(subset="triple_id", keep="first", maintain_order=True)


def cyclic_pairs(triples: pl.DataFrame, config: SyntheticConfig) -> pl.DataFrame:
    """The three pairs of every triple, in the pairs schema (source synthetic_cyclic).

    Each pair is won by one attribute vote of three; margin = cyclic_strength and
    true_p = sigmoid(cyclic_strength) express how sure the (majority) rater is.

    Args:
        triples: the table from ``generate_cyclic``.
        config: ``cyclic_strength`` and the split rule.

    Returns:
        A pairs table (``PAIRS_SCHEMA``), three rows per triple (a>b, b>c, c>a), signal ``ground_truth``.
    """
    true_p = _sigmoid(config.cyclic_strength)
    rows = []
    for t in triples.iter_rows(named=True):
        for win, lose in (("a", "b"), ("b", "c"), ("c", "a")):
            rows.append(_row(t["prompt"], t[f"response_{win}"], t[f"response_{lose}"], config.cyclic_strength,
                             true_p, CYCLIC_SOURCE))
    return _pairs_frame(rows, config)
