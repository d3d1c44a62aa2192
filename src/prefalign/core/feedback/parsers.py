"""One parser per raw format: raw records -> normalised feedback of one source.

A parser takes ``inputs`` (role name -> list of RawRecord, e.g. {"records": [...]} or
{"questions": ..., "answers": ..., "judgments": ...}) and the source's parameters, and returns
a ``ParsedSource`` in one of two normalised forms:

* ``comparisons`` (one row per judged pair): prompt, response_a, response_b, value_a, value_b,
  ties, record. value_* are scores (score_gap), judge probabilities q (judge_prob) or vote counts
  (votes); binary sources put the labelled winner in a and leave the values null.
* ``scored`` (one row per judged response, multi-response sources): group, prompt, response,
  value, responder, record. ``pairs.within_group_pairs`` turns them into comparisons.

Both forms carry ``prompt_messages``: the prompt as chat turns [{role, content}] beside the
flattened ``prompt`` text (the last turn a user turn; one user turn for a single-turn source).

Every record that cannot be used becomes a rejected row (role, file, position, reason, excerpt);
nothing is dropped silently. A judged pair whose two responses are the same text to a reader
(core/text.py) is rejected with that reason. Lookup tables are joined through ``_Lookup``: a key
repeated with the same content is kept once, a key repeated with DIFFERENT content is ambiguous
and every judgment naming it is rejected with the positions of the copies (never keep-last);
both counts are reported per role in the source's ``join_duplicates``. "Primary" records are the judgments themselves (counted as records
read); "auxiliary" records are lookup tables (questions, answers) that judgments are joined to.

Chat flattening rule (one rule for the whole project): a single-turn prompt is the user's text
as is; a multi-turn conversation keeps hh-rlhf's format "\\n\\nHuman: ...\\n\\nAssistant: ...",
the prompt ending with the last "\\n\\nAssistant:" and the response being what follows it.
Responses given as several turns (a few arena answers) are joined with a blank line.

Register a new format with ``@register_parser("name")`` and name it in the source's parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Callable

import polars as pl

from prefalign.core.schema import MESSAGES_DTYPE, user_turn
from prefalign.core.text import canonical_text, has_visible_content, same_to_a_reader
from prefalign.core.feedback.records import (
    RawRecord,
    RecordError,
    as_number,
    field,
    number_field,
    text_field,
)

COMPARISON_SCHEMA = {
    "prompt": pl.String, "prompt_messages": MESSAGES_DTYPE, "response_a": pl.String, "response_b": pl.String,
    "value_a": pl.Float64, "value_b": pl.Float64, "ties": pl.Float64, "record": pl.String,
}
SCORED_SCHEMA = {
    "group": pl.String, "prompt": pl.String, "prompt_messages": MESSAGES_DTYPE, "response": pl.String,
    "value": pl.Float64, "responder": pl.String, "record": pl.String,
}
REJECTED_SCHEMA = {
    "source": pl.String, "role": pl.String, "file": pl.String, "position": pl.Int64,
    "reason": pl.String, "excerpt": pl.String,
}


@dataclass
class ParsedSource:
    kind: str  # "comparisons" or "scored"
    frame: pl.DataFrame
    rejected: list[dict[str, Any]] = dc_field(default_factory=list)
    records_read: int = 0  # primary records (the judgments)
    records_rejected: int = 0
    auxiliary_read: int = 0  # lookup records (questions, answers, the pairs judged by an AI judge)
    auxiliary_rejected: int = 0
    join_duplicates: dict[str, dict[str, int]] = dc_field(default_factory=dict)  # role -> counts


Parser = Callable[[dict[str, list[RawRecord]], dict[str, Any]], ParsedSource]
PARSERS: dict[str, Parser] = {}


def register_parser(name: str) -> Callable[[Parser], Parser]:
    """Register a parser under a name (a decorator).

    Args:
        name: the name a source's ``parser`` parameter uses.

    Returns:
        A decorator that registers the parser and returns it unchanged.
    """
    def register(parser: Parser) -> Parser:
        PARSERS[name] = parser
        return parser
    return register


def get_parser(name: str) -> Parser:
    """The parser registered under ``name``.

    Args:
        name: feedback.sources.<source>.parser.

    Returns:
        The registered parser.

    Raises:
        ValueError: an unknown name, listing the registered ones.
    """
    if name not in PARSERS:
        raise ValueError(f"unknown parser {name!r}; registered parsers: {sorted(PARSERS)}")
    return PARSERS[name]


class _Collector:
    """Runs a row function over records, keeping good rows and turning every failure into a
    rejected row with its reason: the one loop every parser uses."""

    def __init__(self) -> None:
        self.rejected: list[dict[str, Any]] = []
        self.read = {"primary": 0, "auxiliary": 0}
        self.failed = {"primary": 0, "auxiliary": 0}
        self.join_duplicates: dict[str, dict[str, int]] = {}

    def reject(self, role: str, rec: RawRecord, reason: str, primary: bool) -> None:
        self.failed["primary" if primary else "auxiliary"] += 1
        self.rejected.append({"role": role, "file": rec.file, "position": rec.position,
                              "reason": reason, "excerpt": rec.excerpt()})

    def rows(self, role: str, records: list[RawRecord], row_of: Callable[[dict], Any], primary: bool = True) -> list[tuple[RawRecord, Any]]:
        out = []
        self.read["primary" if primary else "auxiliary"] += len(records)
        for rec in records:
            if rec.error is not None:
                self.reject(role, rec, rec.error, primary)
                continue
            try:
                value = row_of(rec.record)
                if isinstance(value, dict) and "response_a" in value:
                    check_distinct_responses(value["response_a"], value["response_b"])
                out.append((rec, value))
            except RecordError as exc:
                self.reject(role, rec, str(exc), primary)
        return out

    def lookup(self, role: str, records: list[RawRecord], entry_of: Callable[[dict], tuple[Any, Any]],
               describe: Callable[[Any], str]) -> "_Lookup":
        """A join table key -> value from auxiliary records (bad ones rejected), with its repeated
        keys checked: see ``_Lookup``."""
        table = _Lookup(describe)
        for rec, (key, value) in self.rows(role, records, entry_of, primary=False):
            table.add(key, value, _ref(rec))
        self.join_duplicates[role] = {"repeated_same_content": table.repeated_same, "repeated_conflicting": len(table.ambiguous)}
        return table

    def result(self, kind: str, rows: list[dict], schema: dict) -> ParsedSource:
        for row in rows:  # single-turn sources: the prompt is one user turn
            if row.get("prompt_messages") is None:
                row["prompt_messages"] = user_turn(row["prompt"])
        return ParsedSource(kind, pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema),
                            self.rejected, self.read["primary"], self.failed["primary"],
                            self.read["auxiliary"], self.failed["auxiliary"], self.join_duplicates)


class _Lookup:
    """A join table that never keeps the last row silently. A key seen again with the same value
    (canonical text) is kept once; seen again with a different value it is ambiguous, and
    ``get`` rejects every judgment naming it, with the positions of the copies."""

    def __init__(self, describe: Callable[[Any], str]) -> None:
        self.describe = describe  # key -> "question with question_id 5 in question.jsonl"
        self.values: dict[Any, Any] = {}
        self.where: dict[Any, list[str]] = {}
        self.ambiguous: set[Any] = set()
        self.repeated_same = 0

    def add(self, key: Any, value: Any, ref: str) -> None:
        if key not in self.values:
            self.values[key], self.where[key] = value, [ref]
            return
        self.where[key].append(ref)
        if _canonical_value(self.values[key]) == _canonical_value(value):
            self.repeated_same += 1
        else:
            self.ambiguous.add(key)

    def __contains__(self, key: Any) -> bool:
        return key in self.values

    def get(self, key: Any) -> Any:
        if key in self.ambiguous:
            raise RecordError(f"the {self.describe(key)} appears {len(self.where[key])} times with different content "
                              f"({', '.join(self.where[key][:4])}); the join is ambiguous, fix the duplicate key")
        if key not in self.values:
            raise RecordError(f"no {self.describe(key)}")
        return self.values[key]


def _canonical_value(value: Any) -> Any:
    if isinstance(value, str):
        return canonical_text(value)
    if isinstance(value, (tuple, list)):
        return tuple(_canonical_value(v) for v in value)
    return value


SAME_TEXT_REASON = "the two responses are the same text to a reader"


def check_distinct_responses(a: str, b: str) -> None:
    """A RecordError when the two responses of a judged pair are the same text to a reader: such a
    pair carries no preference (docs/methods.md s8).

    Args:
        a, b: the two responses of a judged pair.

    Raises:
        RecordError: they are the same text to a reader (the record is rejected).
    """
    if same_to_a_reader(a, b):
        shown = canonical_text(a)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise RecordError(f"{SAME_TEXT_REASON} (they differ at most in whitespace, "
                          f"Unicode form or invisible characters): {shown!r}")


def _ref(rec: RawRecord) -> str:
    return f"{rec.file}#{rec.position}"


def _range(params: dict, key: str = "score_range") -> tuple[float, float]:
    low, high = params[key]
    return float(low), float(high)


# --- UltraFeedback binarized: one pair per line with overall scores ---

@register_parser("ultrafeedback_pairs")
def parse_ultrafeedback(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """{"prompt", "chosen", "rejected", "metadata": {"score_chosen", "score_rejected"}}; scores 1-10.

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    low, high = _range(params)
    c = _Collector()

    def row(r: dict) -> dict:
        return {"prompt": text_field(r, "prompt"), "response_a": text_field(r, "chosen"),
                "response_b": text_field(r, "rejected"),
                "value_a": number_field(r, "metadata.score_chosen", low, high),
                "value_b": number_field(r, "metadata.score_rejected", low, high), "ties": None}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("records", inputs["records"], row)]
    return c.result("comparisons", rows, COMPARISON_SCHEMA)


# --- AlpacaEval / Tulu-2 best-of-n: judge preference of output_2 over a shared reference ---

@register_parser("alpaca_eval_annotations")
def parse_alpaca_eval(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """AlpacaEval annotations: `preference` in [1, 2], minus 1 = the judge's probability that
    output_2 beats the shared reference output_1. Responses to one instruction are grouped.

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    c = _Collector()

    def row(r: dict) -> dict:
        instruction = text_field(r, "instruction")
        return {"group": instruction, "prompt": instruction, "response": text_field(r, "output_2"),
                "value": number_field(r, "preference", 1.0, 2.0) - 1.0,
                "responder": text_field(r, "generator_2")}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("records", inputs["records"], row)]
    return c.result("scored", rows, SCORED_SCHEMA)


# --- Arena-hard (arena-bench v1): GPT-4 score 1-10 per (question, model), joined to answers ---

def _joined_turns(turns: Any, what: str) -> str:
    if not isinstance(turns, list) or not turns:
        raise RecordError(f"{what} has no turns (expected a non-empty list of texts)")
    if not all(isinstance(t, str) for t in turns):
        raise RecordError(f"{what} has a turn that is not text")
    text = "\n\n".join(turns)
    if not has_visible_content(text):
        raise RecordError(f"{what} is empty text (no visible character)")
    return text


@register_parser("arena_judgments")
def parse_arena(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """Arena-hard judgments (GPT-4 score 1-10 per question and model) joined to the questions and
    answers; responses grouped by question.

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    low, high = _range(params)
    c = _Collector()
    questions = c.lookup("questions", inputs["questions"], lambda r: (
        text_field(r, "question_id"), _joined_turns(field(r, "turns"), "question")), lambda k: f"question with question_id {k!r} in question.jsonl")

    def answer(r: dict) -> tuple[tuple[str, str], str]:
        choices = field(r, "choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RecordError("field 'choices' is not a non-empty list of objects")
        return (text_field(r, "question_id"), text_field(r, "model_id")), _joined_turns(choices[0].get("turns"), "answer")

    answers = c.lookup("answers", inputs["answers"], answer, lambda k: f"answer of model {k[1]!r} to question {k[0]!r} in model_answer/")
    seen: set[tuple[str, str]] = set()

    def judgment(r: dict) -> dict:
        qid, model = text_field(r, "question_id"), text_field(r, "model")
        score = number_field(r, "score", low, high)
        question, response = questions.get(qid), answers.get((qid, model))
        if (qid, model) in seen:
            raise RecordError(f"duplicate judgment of model {model!r} on question {qid!r} (the first one is kept)")
        seen.add((qid, model))
        return {"group": qid, "prompt": question, "response": response, "value": score, "responder": model}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("judgments", inputs["judgments"], judgment)]
    return c.result("scored", rows, SCORED_SCHEMA)


# --- Vicuna eval (FastChat): GPT-4 reviews of two answers, score = [s1, s2] on 1-10 ---

@register_parser("vicuna_reviews")
def parse_vicuna(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """Vicuna-eval GPT-4 reviews (score = [answer1, answer2] on 1-10) joined to the questions and answers.

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    low, high = _range(params)
    c = _Collector()
    questions = c.lookup("questions", inputs["questions"], lambda r: (
        _id(r, "question_id"), text_field(r, "text")), lambda k: f"question with question_id {k} in question.jsonl")
    answers = c.lookup("answers", inputs["answers"], lambda r: (
        text_field(r, "answer_id"), (_id(r, "question_id"), text_field(r, "text"))), lambda k: f"answer with answer_id {k!r} in answer/")

    def review(r: dict) -> dict:
        qid = _id(r, "question_id")
        a1, a2 = text_field(r, "answer1_id"), text_field(r, "answer2_id")
        score = field(r, "score")
        if not isinstance(score, list) or len(score) != 2:
            raise RecordError(f"field 'score' must be a list of two scores [answer1, answer2], got {str(score)[:40]}")
        s1, s2 = as_number(score[0], "score of answer1", low, high), as_number(score[1], "score of answer2", low, high)
        question = questions.get(qid)
        for aid in (a1, a2):
            if answers.get(aid)[0] != qid:
                raise RecordError(f"answer {aid!r} answers question {answers.get(aid)[0]}, not {qid}")
        return {"prompt": question, "response_a": answers.get(a1)[1], "response_b": answers.get(a2)[1],
                "value_a": s1, "value_b": s2, "ties": None}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("reviews", inputs["reviews"], review)]
    return c.result("comparisons", rows, COMPARISON_SCHEMA)


def _id(r: dict, path: str) -> str:
    value = field(r, path)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RecordError(f"field '{path}' has type {type(value).__name__}, expected an id (int or text)")
    return str(value)


# --- Prometheus: three GPT-4 ratings 1-5 of a response wrapped in a rubric prompt ---

_PROMETHEUS = re.compile(
    r"###The instruction to evaluate:\s*(?P<instruction>.*?)\s*###Response to evaluate:\s*(?P<response>.*?)\s*"
    r"###Reference Answer.*?###Score Rubrics:\s*(?P<rubric>.*?)\s*(?:###Feedback:|$)", re.S)


def parse_prometheus_prompt(template: str) -> tuple[str, str, str]:
    """(instruction, response, rubric) cut out of Prometheus' rubric template.

    Args:
        template: Prometheus' rubric prompt.

    Returns:
        (instruction, response, rubric).

    Raises:
        RecordError: a missing or empty section, or sections out of order.
    """
    match = _PROMETHEUS.search(template)
    if match is None:
        for marker in ("###The instruction to evaluate:", "###Response to evaluate:", "###Reference Answer", "###Score Rubrics:"):
            if marker not in template:
                raise RecordError(f"rubric prompt has no '{marker}' section")
        raise RecordError("rubric prompt sections are out of order")
    instruction, response, rubric = match.group("instruction", "response", "rubric")
    if not has_visible_content(instruction):
        raise RecordError("the instruction inside the rubric prompt is empty")
    if not has_visible_content(response):
        raise RecordError("the response inside the rubric prompt is empty")
    return instruction, response, rubric


@register_parser("prometheus_rubric")
def parse_prometheus(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """Score = mean of the three `gpt4_score` ratings (1-5). Responses are grouped by
    (instruction, rubric): only responses rated against the same rubric are compared.

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    low, high = _range(params)
    c = _Collector()

    def row(r: dict) -> dict:
        instruction, response, rubric = parse_prometheus_prompt(text_field(r, "instruction"))
        scores = field(r, "gpt4_score")
        if not isinstance(scores, list) or not scores:
            raise RecordError(f"field 'gpt4_score' must be a non-empty list of ratings, got {str(scores)[:40]}")
        values = [as_number(s, f"gpt4_score[{i}]", low, high) for i, s in enumerate(scores)]
        return {"group": instruction + "\x00" + rubric, "prompt": instruction, "response": response,
                "value": sum(values) / len(values), "responder": str(r.get("response_source", ""))}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("records", inputs["records"], row)]
    return c.result("scored", rows, SCORED_SCHEMA)


# --- Anthropic hh-rlhf: two whole dialogues sharing a prefix, binary label ---

HH_ASSISTANT = "\n\nAssistant:"


def split_hh_dialogues(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response): the prompt is the shared prefix up to and
    including the last "\\n\\nAssistant:" marker that both dialogues share.

    Args:
        chosen, rejected: the two whole dialogues.

    Returns:
        (prompt, chosen response, rejected response).

    Raises:
        RecordError: no shared Assistant turn, or an empty last turn.
    """
    common = 0
    for x, y in zip(chosen, rejected):
        if x != y:
            break
        common += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, common)
    if cut < 0:
        raise RecordError("the two dialogues share no '\\n\\nAssistant:' turn, so there is no common prompt")
    end = cut + len(HH_ASSISTANT)
    prompt, response_w, response_l = chosen[:end], chosen[end:].strip(), rejected[end:].strip()
    if not has_visible_content(response_w):
        raise RecordError("the chosen dialogue has an empty last Assistant turn")
    if not has_visible_content(response_l):
        raise RecordError("the rejected dialogue has an empty last Assistant turn")
    return prompt, response_w, response_l


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_prompt_messages(prompt: str) -> list[dict[str, str]]:
    """hh-rlhf's flattened prompt ("\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:") as chat
    turns: Human -> user, Assistant -> assistant, the final empty "Assistant:" (the response's
    slot) left out, so the last turn is the user's. Text before the first marker counts as the
    user's; consecutive turns of one role are joined with a blank line.

    Args:
        prompt: the flattened hh-rlhf prompt.

    Returns:
        The chat turns [{role, content}], last one the user's.

    Raises:
        RecordError: the dialogue does not end with a Human turn.
    """
    parts = _HH_TURN.split(prompt)
    turns: list[dict[str, str]] = []
    pieces = [("Human", parts[0])] + list(zip(parts[1::2], parts[2::2]))
    for speaker, text in pieces:
        role, text = ("user" if speaker == "Human" else "assistant"), text.strip()
        if not text:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise RecordError("the dialogue before the compared Assistant turn does not end with a Human turn")
    return turns


@register_parser("hh_rlhf_dialogues")
def parse_hh_rlhf(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """Anthropic hh-rlhf: two whole dialogues sharing a prefix; the chosen one wins (binary).

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    c = _Collector()

    def row(r: dict) -> dict:
        prompt, w, l = split_hh_dialogues(text_field(r, "chosen"), text_field(r, "rejected"))
        return {"prompt": prompt, "prompt_messages": hh_prompt_messages(prompt), "response_a": w, "response_b": l,
                "value_a": None, "value_b": None, "ties": None}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("records", inputs["records"], row)]
    return c.result("comparisons", rows, COMPARISON_SCHEMA)


# --- PandaLM: three human votes (1 = response1, 2 = response2, 0 = tie), and AI judges ---

def pandalm_prompt(r: dict) -> str:
    """The instruction, then its optional input after a blank line.

    Args:
        r: a PandaLM record.

    Returns:
        The prompt text.

    Raises:
        RecordError: a missing instruction or a non-text input.
    """
    instruction = text_field(r, "instruction")
    extra = r.get("input")
    if extra is not None and not isinstance(extra, str):
        raise RecordError(f"field 'input' has type {type(extra).__name__}, expected text")
    return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction


def _verdict(value: Any, name: str) -> int:
    if isinstance(value, str) and value.strip().lower() == "tie":
        return 0  # the GPT-3.5 judge writes "Tie" where the others write 0
    number = as_number(value, name, 0, 2)
    if number != int(number):
        raise RecordError(f"{name} = {number:g} is not a verdict (0 = tie, 1 = response1, 2 = response2)")
    return int(number)


@register_parser("pandalm_votes")
def parse_pandalm_votes(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """PandaLM human votes: three annotators (1 = response1, 2 = response2, 0 = tie).

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    c = _Collector()
    annotators = params.get("annotator_fields", ["annotator1", "annotator2", "annotator3"])

    def row(r: dict) -> dict:
        verdicts = [_verdict(field(r, a), f"field '{a}'") for a in annotators]
        return {"prompt": pandalm_prompt(r), "response_a": text_field(r, "response1"), "response_b": text_field(r, "response2"),
                "value_a": float(verdicts.count(1)), "value_b": float(verdicts.count(2)), "ties": float(verdicts.count(0))}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("records", inputs["records"], row)]
    return c.result("comparisons", rows, COMPARISON_SCHEMA)


@register_parser("pandalm_judge")
def parse_pandalm_judge(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """An AI judge's verdict on PandaLM's pairs (joined on `idx`), read as ONE vote (Laplace-smoothed
    like the human votes: a win gives p = (1 + a) / (1 + 2a), a tie p = 0.5).

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    c = _Collector()
    result_field = params["result_field"]
    pairs = c.lookup("testset", inputs["testset"], lambda r: (
        _id(r, "idx"), (pandalm_prompt(r), text_field(r, "response1"), text_field(r, "response2"))),
        lambda k: f"usable pair with idx {k} in the PandaLM test set")

    def row(r: dict) -> dict:
        idx = _id(r, "idx")
        verdict = _verdict(field(r, result_field), f"field '{result_field}'")
        prompt, a, b = pairs.get(idx)
        return {"prompt": prompt, "response_a": a, "response_b": b, "value_a": float(verdict == 1),
                "value_b": float(verdict == 2), "ties": float(verdict == 0)}

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("predictions", inputs["predictions"], row)]
    return c.result("comparisons", rows, COMPARISON_SCHEMA)


# --- A user's own preference table (TRL / hub formats), configured by a column mapping ---

TABLE_FIELDS = ("prompt", "chosen", "rejected", "system", "score_chosen", "score_rejected", "margin", "label")
_LABEL_A = {"1", "true", "chosen", "a", "first"}
_LABEL_B = {"0", "false", "rejected", "b", "second"}


def flatten_messages(turns: list[dict[str, str]]) -> str:
    """The documented flattening of chat turns to prompt text (docs/feedback.md): system turns'
    text first (a blank line after each); then one user turn is its text as is, and a longer
    conversation is written hh-rlhf's way, "\\n\\nHuman: ...\\n\\nAssistant: ...", ending with
    "\\n\\nAssistant:" where the response goes.

    Args:
        turns: chat turns [{role, content}].

    Returns:
        The prompt text.
    """
    system = [t["content"] for t in turns if t["role"] == "system"]
    dialogue = [t for t in turns if t["role"] != "system"]
    head = "".join(text + "\n\n" for text in system)
    if len(dialogue) == 1 and dialogue[0]["role"] == "user":
        return head + dialogue[0]["content"]
    body = "".join(f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in dialogue)
    return (head.rstrip("\n") + body if head else body) + HH_ASSISTANT


def _turns(value: Any, what: str) -> list[dict[str, str]]:
    """A list of {role, content} turns, checked (roles system/user/assistant, text content)."""
    if not isinstance(value, list) or not value:
        raise RecordError(f"{what} is not a non-empty list of {{role, content}} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise RecordError(f"{what}[{i}] is not a {{role, content}} turn with text content")
        if turn.get("role") not in ("system", "user", "assistant"):
            raise RecordError(f"{what}[{i}] has role {turn.get('role')!r}, expected system, user or assistant")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns


def _response_and_context(value: Any, what: str) -> tuple[str, list[dict[str, str]] | None]:
    """(response text, the turns before it or None): a string is the response itself; a
    conversation's last turn must be the assistant's response, its earlier turns the prompt."""
    if isinstance(value, str) or value is None:
        if not isinstance(value, str) or not has_visible_content(value):
            raise RecordError(f"field '{what}' is {'null' if value is None else 'empty text (no visible character)'}")
        return value, None
    turns = _turns(value, f"field '{what}'")
    if turns[-1]["role"] != "assistant":
        raise RecordError(f"field '{what}' ends with a {turns[-1]['role']!r} turn; its last turn must be the assistant's response")
    if not has_visible_content(turns[-1]["content"]):
        raise RecordError(f"field '{what}' has an empty last assistant turn")
    return turns[-1]["content"], turns[:-1] or None


def _label_says_a_wins(value: Any, column: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in ("1.0",):
        text = "1"
    if text in ("0.0",):
        text = "0"
    if text in _LABEL_A:
        return True
    if text in _LABEL_B:
        return False
    raise RecordError(f"field '{column}' = {str(value)[:20]!r} is not a winner label (1/true/chosen/a for the "
                      "chosen column's response, 0/false/rejected/b for the rejected column's)")


def check_table_params(params: dict) -> dict[str, str | None]:
    """The column mapping of a preference_table source: field -> column name (or None).

    Args:
        params: the preference_table source's parameters.

    Returns:
        field -> column name (None = absent).

    Raises:
        ValueError: unknown fields, or a mapping that does not fit the signal.
    """
    columns = dict(params.get("columns") or {})
    unknown = sorted(set(columns) - set(TABLE_FIELDS))
    if unknown:
        raise ValueError(f"preference_table columns has unknown fields {unknown}; use {list(TABLE_FIELDS)}")
    mapping = {f: columns.get(f, f if f in ("prompt", "chosen", "rejected") else None) for f in TABLE_FIELDS}
    signal = params["signal"]
    if signal == "score_gap" and not ((mapping["score_chosen"] and mapping["score_rejected"]) or mapping["margin"]):
        raise ValueError("a score_gap preference_table needs columns.score_chosen and columns.score_rejected, or columns.margin")
    if signal not in ("score_gap", "binary"):
        raise ValueError(f"a preference_table source has signal score_gap (scores or a margin) or binary "
                         f"(chosen wins, or a winner label), not {signal!r}")
    if mapping["label"] and signal != "binary":
        raise ValueError("columns.label (which response won) goes with signal: binary")
    return mapping


@register_parser("preference_table")
def parse_preference_table(inputs: dict[str, list[RawRecord]], params: dict) -> ParsedSource:
    """A user's table (JSONL, JSON, Parquet, CSV, a saved ``datasets`` folder) in the formats TRL
    and the hub use, through ``columns`` (field -> column name):

    * prompt / chosen / rejected: text, or lists of {role, content} turns. A conversational chosen
      or rejected is a whole conversation whose last (assistant) turn is the response; without a
      prompt column (map prompt to null) its earlier turns, which must be the same for chosen and
      rejected, are the prompt. ``system``: an optional system prompt column.
    * score_gap: score_chosen and score_rejected (m = s_c - s_r, p = sigmoid(gamma m)), or a
      margin column (m, p = sigmoid(gamma m)); either may say the "rejected" column won.
    * binary: chosen wins (p = binary_p), or a ``label`` column says which of the two won.

    Same rejection rules as every source: a bad row is a rejected record with its reason.

    Args:
        inputs: role -> decoded raw records (RawRecordsDataset).
        params: feedback.sources.<source>.

    Returns:
        ParsedSource: the normalised frame (module docstring), every unusable record as a rejected row, and the counts.

    Source: docs/feedback.md, "Sources".
    """
    columns = check_table_params(params)
    score_range = tuple(params["score_range"]) if params.get("score_range") else (None, None)
    c = _Collector()

    def row(r: dict) -> dict:
        response_a, context_a = _response_and_context(field(r, columns["chosen"]), columns["chosen"])
        response_b, context_b = _response_and_context(field(r, columns["rejected"]), columns["rejected"])
        if columns["prompt"] is not None and columns["prompt"] in r:
            value = field(r, columns["prompt"])
            turns = user_turn(text_field(r, columns["prompt"])) if isinstance(value, str) or value is None \
                else _turns(value, f"field '{columns['prompt']}'")
        else:
            if context_a is None or context_b is None:
                raise RecordError(f"no prompt: field '{columns['prompt']}' is missing and chosen/rejected are not "
                                  "conversations holding the prompt turns")
            if [(t["role"], canonical_text(t["content"])) for t in context_a] != \
                    [(t["role"], canonical_text(t["content"])) for t in context_b]:
                raise RecordError("the chosen and rejected conversations do not share their prompt turns")
            turns = context_a
        if columns["system"] and r.get(columns["system"]) is not None:
            turns = [{"role": "system", "content": text_field(r, columns["system"])}] + [t for t in turns if t["role"] != "system"]
        if turns[-1]["role"] != "user":
            raise RecordError(f"the prompt ends with a {turns[-1]['role']!r} turn; its last turn must be the user's")
        if not any(t["role"] == "user" and has_visible_content(t["content"]) for t in turns):
            raise RecordError("the prompt has no user turn with visible text")
        out = {"prompt": flatten_messages(turns), "prompt_messages": turns, "response_a": response_a,
               "response_b": response_b, "value_a": None, "value_b": None, "ties": None}
        if params["signal"] == "score_gap":
            if columns["score_chosen"] and columns["score_rejected"]:
                out["value_a"] = number_field(r, columns["score_chosen"], *score_range)
                out["value_b"] = number_field(r, columns["score_rejected"], *score_range)
            else:  # a margin of chosen over rejected, in the table's unit
                out["value_a"], out["value_b"] = number_field(r, columns["margin"]), 0.0
        elif columns["label"] and not _label_says_a_wins(field(r, columns["label"]), columns["label"]):
            out["response_a"], out["response_b"] = response_b, response_a
        return out

    rows = [dict(v, record=_ref(rec)) for rec, v in c.rows("records", inputs["records"], row)]
    return c.result("comparisons", rows, COMPARISON_SCHEMA)
