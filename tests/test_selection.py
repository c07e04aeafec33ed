"""Choosing the answer: the candidates' features, the selector, its training and its refusal threshold, on tiny
literal Arabic inputs and hand-made records."""

import dataclasses
import json
import math

import pytest
from conftest import SCRIPTED_SELECTOR, ScriptedGenerator

from rag.answer_types import DATE, OTHER
from rag.chunk import Chunk
from rag.config import Config
from rag.errors import RagError
from rag.evidence import Evidence, Ranked, select
from rag.reading.candidates import Candidate, Proposal, part_of, propose
from rag.reading.features import GROUPS, JUDGE_NAMES, NAMES, clause_of, distance, features, judge_features, overlap_f1
from rag.reading.select import SelectingReader, choose
from rag.reading.selector import Selector, load_selector, parse_selector
from rag.reading.train import (
    Example,
    Judgements,
    alone,
    draw,
    elsewhere,
    fit,
    judgements_file,
    negatives,
    oracle,
    proposals_file,
    ranked_by,
    removed,
    right,
    score,
    threshold_for,
    training_files,
    with_selector,
)
from rag.stores.base import Passage

VISIT = "قام الرئيس الروسي فلاديمير بوتين بزيارة إلى الدوحة في فبراير عام 2007، وهي أول زيارة له إلى قطر كرئيس."
SAID = "وقال بوغدانوف إن موسكو تدعم الحوار، مؤكدا أهمية دور قطر في الوساطة."


def _ev(text: str, n: int = 1, start: int = 0, score: float = 1.0, shown: bool = True) -> Evidence:
    return Evidence(n, f"s{n}.txt", "عنوان", None, start, start + len(text), text, score, shown)


def test_feature_helpers():
    assert overlap_f1(["a", "b"], ["b", "c"]) == 0.5 and overlap_f1(["a"], ["c"]) == 0.0
    assert clause_of(SAID, SAID.index("مؤكدا")) == " مؤكدا أهمية دور قطر في الوساطة"
    at = SAID.index("موسكو")
    assert distance(SAID, at, at + len("موسكو تدعم الحوار"), {"بوغدانوف"}) == 1  # 'إن' between
    assert distance(SAID, at, at + 5, {"غائب"}) == 20


def test_every_candidate_has_every_feature_in_its_group():
    proposal = propose("متى زار بوتين قطر؟", [_ev(VISIT)], ScriptedGenerator("فبراير عام 2007"), DATE, 32)
    assert sorted(NAMES) == sorted({n for g in GROUPS.values() for n in g}) and len(NAMES) == len(set(NAMES))
    for candidate in proposal.candidates:
        values = features(proposal, candidate)
        assert list(values) == NAMES and all(math.isfinite(v) for v in values.values())
    date = next(c for c in proposal.candidates if c.text == "فبراير عام 2007")
    values = features(proposal, date)
    assert values["type_match"] == values["source_reply"] == values["in_reply"] == 1.0 and values["agreement"] == 3
    clause = next(c for c in proposal.candidates if "أول زيارة" in c.text)
    assert features(proposal, clause)["type_match"] == 0.0


def test_a_reply_naming_a_year_the_shown_sentences_lack_is_invented_even_if_a_hidden_one_holds_it():
    evidence = [_ev("تعود العلاقات إلى عام 1988.", 1), _ev(VISIT, 2, 100, 0.5, shown=False)]
    proposal = propose("متى بدأت العلاقات؟", evidence, ScriptedGenerator("عام 2007"), DATE, 32)
    assert all(features(proposal, c)["invented"] == 1.0 for c in proposal.candidates)


def test_hidden_sentences_propose_but_are_not_read():
    generator = ScriptedGenerator("الدوحة")
    evidence = [_ev(VISIT, 1), _ev(SAID, 2, 300, 0.2, shown=False)]
    proposal = propose("إلى أين سافر بوتين؟", evidence, generator, OTHER, 32)
    assert SAID not in generator.prompts[0][-1]["content"]  # the model reads only the shown sentence
    assert any(c.parts[0].evidence is evidence[1] for c in proposal.candidates)  # which still proposes clauses


def test_select_marks_the_best_sentences_shown_and_keeps_more():
    class Chunk:
        article_id, title, date, start, text = "a.txt", "t", None, 0, "أ" * 100

    class Passage:
        chunk = Chunk()

    ranked = [Ranked(score, 0, s, s + 5, Passage()) for score, s in ((3.0, 50), (1.0, 0), (0.5, 20), (0.4, 70))]
    evidence = select(ranked, 2, 0.6, more=1)
    assert [(ev.start, ev.shown) for ev in evidence] == [(0, False), (20, False), (50, True)]
    assert [ev.start for ev in select(ranked, 2, 0.6)] == [50]  # no more: the shown ones only


def test_the_selector_reads_its_json_and_refuses_bad_files(tmp_path):
    selector = load_selector()
    assert set(selector.names) <= set(NAMES) and 0 <= selector.threshold <= 1
    text = json.dumps(SCRIPTED_SELECTOR.to_dict())
    assert parse_selector(text, "x") == SCRIPTED_SELECTOR
    path = tmp_path / "s.json"
    path.write_text(text.replace('"scale": [1.0', '"scale": [0.0'), encoding="utf-8")
    with pytest.raises(RagError, match="not a selector file"):
        load_selector(str(path))
    with pytest.raises(RagError, match="not a selector file"):
        parse_selector('{"names": ["a"]}', "y")


def _proposal() -> Proposal:
    ev = _ev(VISIT)
    reply = Candidate([part_of(ev, VISIT.index("فبراير"), VISIT.index("،"))], ["reply"])
    clause = Candidate([part_of(ev, VISIT.index("وهي"), len(VISIT))], ["clause"])
    return Proposal("متى زار بوتين قطر؟", DATE, [ev], [clause, reply], raw="فبراير عام 2007")


def test_the_most_likely_candidate_is_chosen_and_below_the_threshold_nothing():
    proposal = _proposal()
    reading = choose(proposal, SCRIPTED_SELECTOR, 0.5)
    assert reading.parts[0].text == "فبراير عام 2007" and reading.method == "reply" and reading.confidence > 0.7
    refused = choose(proposal, SCRIPTED_SELECTOR, 0.99)
    assert refused.refused and refused.confidence == reading.confidence and refused.proposal is proposal


def test_threshold_for_a_stated_false_refusal_rate():
    best = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, None, 0.95]
    answerable = [True] * 10 + [False]
    assert threshold_for(best, answerable, 0.0) == 0.0
    assert threshold_for(best, answerable, 0.1) == 0.0  # the one allowed is refused anyway (None)
    assert threshold_for(best, answerable, 0.2) == 0.2  # refuses None and 0.1
    assert threshold_for(best, answerable, 0.3) == 0.3
    assert threshold_for(best, answerable, 1.0) == 1.0


def _records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        proposal = _proposal()
        answerable = i % 4 != 0
        if not answerable:  # tempting evidence: the model names nothing in it
            proposal.raw = "لا توجد معلومات"
        out.append({"id": str(i), "group": "t", "answers": ["فبراير عام 2007"] if answerable else [], "sources": [],
                    "proposal": proposal.to_dict()})
    return out


@pytest.mark.parametrize("objective", ["pointwise", "listwise"])
def test_a_selector_trained_on_records_picks_the_right_candidate_and_refuses_when_the_model_says_so(objective):
    records = _records(40)
    selector = fit(records, false_refusals=0.05, objective=objective)
    assert selector.names == NAMES and selector.manifest["candidates"] == 80 and selector.manifest["right"] == 30
    figures = score(records, with_selector(selector))
    assert figures["correct"] == 1.0 and figures["false_refusals"] == 0.0 and figures["unanswerable_refused"] == 1.0
    assert selector.manifest["validation"]["correct"] == 1.0
    lean = fit(records, drop=["model", "source"])
    assert not {"reply_f1", "source_reply"} & set(lean.names)


def test_the_proposals_cache_is_named_by_the_readers_code_prompts_and_settings(tmp_path):
    first = proposals_file(tmp_path, Config(), "model.gguf")
    assert first.parent == tmp_path and first.name.startswith("proposals-model.gguf-")
    assert proposals_file(tmp_path, Config(), "model.gguf") == first
    assert proposals_file(tmp_path, Config(evidence_sentences=5), "model.gguf") != first
    assert proposals_file(tmp_path, Config(evidence_share=0.4), "model.gguf") != first
    assert proposals_file(tmp_path, Config(embedder="embeddinggemma-300m"), "model.gguf") != first  # it retrieves


def test_negatives_pair_questions_with_the_most_tempting_paragraph_that_does_not_answer():
    other = "زار بوتين الدوحة مرة ثانية دون أن يذكر التاريخ."
    examples = [Example("1", "متى زار بوتين الدوحة؟", ["فبراير عام 2007"], "", VISIT, "t"),
                Example("2", "ماذا قال بوغدانوف؟", ["موسكو تدعم الحوار"], "", SAID, "t"),
                Example("3", "هل زار بوتين الدوحة ثانية؟", ["نعم"], "", other, "t")]
    [negative] = [n for n in negatives(examples, 1.0) if n.id == "1-neg"]
    assert (negative.text, negative.answers, negative.group) == (other, [], "t-neg")  # shares the most terms


def test_a_paragraph_less_the_sentences_holding_the_answer_is_a_negative():
    text = "وصل بوتين إلى الدوحة أمس. زار بوتين الدوحة في فبراير عام 2007. والتقى الأمير في القصر."
    [cut] = removed([Example("1", "متى زار بوتين الدوحة؟", ["فبراير عام 2007"], "زيارة", text, "t")], 1.0)
    assert (cut.id, cut.answers, cut.group) == ("1-cut", [], "t-cut")
    assert cut.text == "وصل بوتين إلى الدوحة أمس. والتقى الأمير في القصر."
    half = "زار بوتين الدوحة في فبراير عام مضى. والتقى الأمير. ثم عاد."  # 2 of the answer's 3 words: it goes too
    assert removed([Example("2", "متى؟", ["فبراير عام 2007"], "", half, "t")], 1.0)[0].text == "والتقى الأمير. ثم عاد."
    too_short = "زار بوتين الدوحة في فبراير عام 2007. ثم عاد."
    assert removed([Example("3", "متى؟", ["فبراير عام 2007"], "", too_short, "t")], 1.0) == []


def test_the_training_examples_are_drawn_again_the_same_from_the_same_settings(tmp_path):
    paragraphs = [{"context": VISIT, "qas": [{"id": "v1", "question": "متى زار بوتين الدوحة؟",
                                              "answers": [{"text": "فبراير عام 2007"}]}]},
                  {"context": SAID, "qas": [{"id": "s1", "question": "ماذا قال بوغدانوف؟",
                                             "answers": [{"text": "موسكو تدعم الحوار"}]},
                                            {"id": "s2", "question": "من قال؟", "answers": [{"text": "بوغدانوف"}]}]}]
    (tmp_path / "data").mkdir()
    (tmp_path / "benchmarks").mkdir()
    for data in ("data/arcd-train.json", "benchmarks/tydiqa_goldp_arabic_dev.json"):
        (tmp_path / data).write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    (tmp_path / "arcd-train.ids").write_text("v1\ns1\n", encoding="utf-8")  # s2 is not in the split
    (tmp_path / "tydi-ar-train.ids").write_text("v1 s1 s2", encoding="utf-8")
    files = training_files(tmp_path, tmp_path)
    drawn = draw(files, 2, 0.5, seed=0)
    assert sorted(e.id for e in drawn if e.group == "arcd") == ["s1", "v1"]
    assert len([e for e in drawn if e.group == "tydi"]) == 2
    negative = [e for e in drawn if not e.answers]
    assert len(negative) == 2 and all(e.group in ("arcd-neg", "tydi-neg") for e in negative)  # half of the 4
    assert [(e.group, e.id) for e in draw(files, 2, 0.5, seed=0)] == [(e.group, e.id) for e in drawn]


def _passage(article: str, text: str) -> Passage:
    return Passage(Chunk(f"{article}#0", article, "عنوان", None, 0, len(text), text), 1.0, 0.5, 1.0)


def test_gold_questions_are_read_again_with_the_articles_that_do_not_answer_them():
    found = [_passage("a.txt", VISIT), _passage("b.txt", SAID), _passage("c.txt", "بوتين في الدوحة."),
             _passage("d.txt", "زيارة أخرى.")]
    asked = Example("q1", "متى زار بوتين الدوحة؟", ["فبراير عام 2007"], "", "", "gold-dev", ["a.txt"])
    [(negative, passages)] = elsewhere([asked, dataclasses.replace(asked, id="q2", answers=[])], lambda q: found, 2)
    assert (negative.id, negative.answers, negative.group) == ("q1-neg", [], "gold-dev-neg")
    assert [p.chunk.article_id for p in passages] == ["b.txt", "c.txt"]  # its own article left out, k kept
    elsewhere_too = dataclasses.replace(asked, sources=["b.txt"])  # another article also holds the answer
    assert elsewhere([elsewhere_too], lambda q: found, 2) == []


def test_choosers_and_scores():
    records = _records(4)
    assert right(_proposal().candidates[1], ["فبراير 2007"]) and not right(_proposal().candidates[0], ["2007"])
    assert score(records, oracle)["correct"] == 1.0
    assert score(records, alone("clause"))["correct"] == 0.0
    assert score(records, alone("reply"))["unanswerable_refused"] == 0.0


def test_one_selector_chooses_and_another_decides_whether_to_answer():
    records = _records(40)
    pointwise, listwise = fit(records), fit(records, objective="listwise")
    assert score(records, ranked_by(listwise, pointwise)) == score(records, with_selector(pointwise))
    contrary = dataclasses.replace(listwise, coef=[-c for c in listwise.coef])  # ranks the clause first
    chosen = score(records, ranked_by(contrary, pointwise))
    assert chosen["correct"] == 0.0 and chosen["false_refusals"] == 0.0  # answers, with the ranker's choice
    assert score(records, ranked_by(listwise, dataclasses.replace(pointwise, threshold=1.1)))["false_refusals"] == 1.0


def test_judge_features_compare_the_models_log_probabilities_of_the_best_candidates():
    looks = judge_features([0.9, 0.2], [[-0.1, -0.2, -0.1], [-3.0, -4.0, -1.0], [-5.0, -0.5]])
    assert [list(v) for v in looks] == [JUDGE_NAMES, JUDGE_NAMES]
    first, second = looks
    assert first["prior"] == pytest.approx(math.log(9)) and second["prior_rank"] == 1.0
    assert first["logprob"] == pytest.approx(-0.4) and first["gap"] == 0.0 and second["gap"] == pytest.approx(-7.6)
    assert first["share"] + second["share"] == pytest.approx(1.0) and first["share"] > 0.99
    assert first["none_margin"] == pytest.approx(5.1) and second["end_logprob"] == -1.0
    assert first["mean_logprob"] == pytest.approx(-0.4 / 3) and second["min_logprob"] == -4.0
    assert judge_features([1.0], [[-1.0], [-1.0]])[0]["prior"] == 10.0  # a certain prior is cut, not infinite


JUDGE = Selector(["logprob"], [0.0], [1.0], [1.0], 4.0, 0.5, {"note": "a judge of one feature"})


def _judged(selector: Selector = SCRIPTED_SELECTOR) -> Selector:
    return Selector(**{**selector.__dict__, "judge": JUDGE, "judged": 2})


def test_the_judge_looks_again_at_the_selectors_best_and_may_overrule_it():
    proposal = _proposal()  # the selector prefers the reply (فبراير عام 2007) to the clause
    asked = []

    def judge(top: list[int]) -> list[list[float]]:
        asked.append(top)
        return [[-0.5] if proposal.candidates[i].parts[0].text.startswith("وهي") else [-3.0] for i in top] + [[-1.0]]

    reading = choose(proposal, _judged(), None, judge)
    assert asked == [[1, 0]] and reading.parts[0].text.startswith("وهي") and reading.confidence > 0.9
    assert choose(proposal, _judged(), None, judge, judged=0).parts[0].text == "فبراير عام 2007"  # no second look
    assert choose(proposal, _judged(), None, judge, judged=1).parts[0].text == "فبراير عام 2007"  # only its best
    assert choose(proposal, _judged(), 0.999, judge).refused  # a stated threshold holds for the judge too
    never = choose(proposal, _judged(), None, lambda top: [[-9.0]] * len(top) + [[-0.1]])
    assert never.refused and never.confidence < JUDGE.threshold  # the judge's own threshold


def test_a_selector_with_a_judge_reads_and_writes_its_json():
    selector = _judged()
    assert parse_selector(json.dumps(selector.to_dict()), "x") == selector
    assert "judge" not in SCRIPTED_SELECTOR.to_dict()
    broken = selector.to_dict() | {"judged": 0}
    with pytest.raises(RagError, match="judged >= 1"):
        parse_selector(json.dumps(broken), "x")


def test_the_reader_asks_the_model_to_judge_folded_candidates_and_no_answer(monkeypatch):
    monkeypatch.setattr("rag.reading.select.load_selector", lambda path="": _judged())
    generator = ScriptedGenerator("فبراير عام 2007")
    generator.judgements["فبراير عام 2007"] = -0.2
    evidence = [_ev(VISIT.replace("قطر", "قطر ی"))]  # a Persian letter: the model reads it folded
    reading = SelectingReader(Config(), generator).read("متى زار بوتين قطر؟", evidence, DATE)
    assert reading.parts[0].text == "فبراير عام 2007" and len(generator.scored) == 1
    *replies, none = generator.scored[0]
    assert len(replies) == 2 and none == "لا توجد إجابة" and not any("ی" in r for r in replies)
    SelectingReader(Config(judged=0), generator).read("متى زار بوتين قطر؟", evidence, DATE)
    assert len(generator.scored) == 1  # judged = 0: the selector alone


def test_judgements_are_cached_by_record_and_reply(tmp_path):
    generator = ScriptedGenerator()
    path = judgements_file(tmp_path / "proposals-m-0123.jsonl")
    assert path.parent == tmp_path and path.name.startswith("judgements-")
    record, proposal = _records(1)[0] | {"id": "q"}, _proposal()
    judgements = Judgements(generator, path)
    first = judgements(record, proposal, [1])
    assert len(first) == 2 and generator.scored == [["فبراير عام 2007", "لا توجد إجابة"]]
    assert judgements(record, proposal, [1]) == first and len(generator.scored) == 1  # asked once
    assert Judgements(generator, path)(record, proposal, [0, 1])[1] == first[0]  # read back from the file
    assert generator.scored[-1] == [proposal.candidates[0].text, "لا توجد إجابة"]  # only what was missing
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_a_judge_trained_on_the_models_judgements_of_records():
    records = _records(40)

    def judge(record: dict, proposal: Proposal, top: list[int]) -> list[list[float]]:
        return [[-0.2] if right(proposal.candidates[i], ["فبراير عام 2007"]) else [-4.0] for i in top] + [[-2.0]]

    selector = fit(records, false_refusals=0.05, judge=judge, judged=2)
    assert selector.judge.names == JUDGE_NAMES and selector.judged == 2
    assert selector.manifest["selector_validation"]["correct"] == 1.0
    assert selector.manifest["validation"] == selector.judge.manifest["validation"]
    figures = score(records, with_selector(selector, judge=judge))
    assert figures["correct"] == 1.0 and figures["false_refusals"] == 0.0
