"""Judges: output/input validation, load_judge's spec forms, and the preference-model judge."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest

from lm_runs.judges import (
    CallableJudge,
    CheckedJudge,
    JudgeError,
    check_judgements,
    check_pairs,
    load_judge,
)
from lm_runs.judges.pair_format import FIRST_IS_BETTER, render_pair

# ----------------------------------------------------------------------------- check_judgements


def test_check_judgements_returns_python_floats():
    out = check_judgements(np.array([0.0, 0.25, 1.0], dtype=np.float32), 3, "src")
    assert out == [0.0, 0.25, 1.0]
    assert all(type(v) is float for v in out)
    assert check_judgements((np.float64(0.5), 1, 0), 3, "src") == [0.5, 1.0, 0.0]


@pytest.mark.parametrize(
    "values, count, fragments",
    [
        ([0.1, 0.2, float("nan")], 3, ["my-judge", "NaN", "index 2"]),
        ([0.1, 1.5], 2, ["my-judge", "1.5", "index 1", "outside [0, 1]"]),
        ([-0.01], 1, ["my-judge", "-0.01", "index 0"]),
        ([0.3, "0.5"], 2, ["my-judge", "'0.5'", "index 1", "non-number"]),
        ([None], 1, ["my-judge", "None", "index 0"]),
        ([True, 0.5], 2, ["my-judge", "True", "index 0"]),
        ([0.5, [0.5]], 2, ["my-judge", "[0.5]", "index 1"]),
        ([0.5, float("inf")], 2, ["my-judge", "inf", "index 1"]),
        ([0.5, 0.5], 3, ["my-judge", "2 values for 3 pairs"]),
        (0.5, 1, ["my-judge", "float", "expected a list of 1"]),
        ("0.5", 1, ["my-judge", "str"]),
    ],
)
def test_check_judgements_names_source_value_and_index(values, count, fragments):
    with pytest.raises(JudgeError) as info:
        check_judgements(values, count, "my-judge")
    for fragment in fragments:
        assert fragment in str(info.value)


def test_check_judgements_reports_the_first_bad_value():
    with pytest.raises(JudgeError, match=r"index 1"):
        check_judgements([0.5, 2.0, float("nan")], 3, "s")


# ------------------------------------------------------------------------------------ check_pairs


def test_check_pairs_normalizes_to_lists():
    prompts, pairs = check_pairs(("p", "q"), [("a", "b"), ["c", "d"]])
    assert prompts == ["p", "q"] and pairs == [["a", "b"], ["c", "d"]]
    assert check_pairs([], []) == ([], [])


@pytest.mark.parametrize(
    "prompts, completions, fragment",
    [
        (["p", "q"], [["a", "b"]], "prompts has 2 items but completions has 1"),
        (["p", "q"], [["a", "b"], ["a", "b", "c"]], "completions[1] must hold exactly 2 responses, got 3"),
        (["p"], [["a"]], "completions[0] must hold exactly 2 responses, got 1"),
        (["p"], ["ab"], "completions[0] must be a pair"),
        (["p", "q"], [["a", "b"], ["a", 3]], "completions[1][1] must be a string, got int"),
        (["p", 7], [["a", "b"], ["a", "b"]], "prompts[1] must be a string, got int"),
        ("pq", [["a", "b"], ["c", "d"]], "prompts must be a sequence"),
        (["p"], None, "completions must be a sequence"),
    ],
)
def test_check_pairs_names_the_index(prompts, completions, fragment):
    with pytest.raises(ValueError) as info:
        check_pairs(prompts, completions)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------- load_judge


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    (tmp_path / "egpo_test_judges_mod.py").write_text(
        textwrap.dedent(
            """
            NOT_CALLABLE = 3

            def by_length(prompts, completions):
                return [len(a) / (len(a) + len(b)) for a, b in completions]

            def out_of_range(prompts, completions):
                return [1.5 for _ in prompts]

            def too_few(prompts, completions):
                return [0.5]

            SEEN = []

            def shuffle_aware(prompts, completions, shuffle_order=True):
                SEEN.append(shuffle_order)
                return [0.25 if shuffle_order else 0.75 for _ in prompts]

            class Holder:
                @staticmethod
                def constant(prompts, completions):
                    return [0.5] * len(prompts)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    return "egpo_test_judges_mod"


def test_load_judge_callable(judge_module):
    judge = load_judge(f"{judge_module}:by_length")
    assert isinstance(judge, CheckedJudge) and isinstance(judge.inner, CallableJudge)
    assert judge.name == f"{judge_module}:by_length"
    assert judge(["p", "q"], [["aaa", "b"], ["a", "bbb"]]) == [0.75, 0.25]
    assert judge([], []) == []
    assert load_judge(f"{judge_module}:Holder.constant")(["p"], [["a", "b"]]) == [0.5]


def test_loaded_judges_validate_their_output(judge_module):
    with pytest.raises(JudgeError, match=rf"{judge_module}:out_of_range.*1\.5.*index 0"):
        load_judge(f"{judge_module}:out_of_range")(["p"], [["a", "b"]])
    with pytest.raises(JudgeError, match=r"too_few returned 1 values for 2 pairs"):
        load_judge(f"{judge_module}:too_few")(["p", "q"], [["a", "b"], ["c", "d"]])
    with pytest.raises(ValueError, match=r"completions\[0\] must hold exactly 2"):
        load_judge(f"{judge_module}:by_length")(["p"], [["a", "b", "c"]])


def test_shuffle_order_reaches_only_judges_that_take_it(judge_module):
    import egpo_test_judges_mod as mod

    aware = load_judge(f"{judge_module}:shuffle_aware")
    assert aware(["p"], [["a", "b"]], shuffle_order=False) == [0.75]
    assert aware(["p"], [["a", "b"]], shuffle_order=True) == [0.25]
    assert aware(["p"], [["a", "b"]]) == [0.25]  # not passed: the callable's own default
    assert mod.SEEN == [False, True, True]
    plain = load_judge(f"{judge_module}:by_length")
    assert plain(["p"], [["aaa", "b"]], shuffle_order=False) == [0.75]  # ignored, no TypeError


@pytest.mark.parametrize(
    "spec, fragments",
    [
        ("no_such_module_xyz:fn", ["'no_such_module_xyz:fn'", "cannot import module 'no_such_module_xyz'"]),
        ("{mod}:missing", ["'{mod}:missing'", "no attribute 'missing'"]),
        ("{mod}:NOT_CALLABLE", ["'{mod}:NOT_CALLABLE'", "int, not callable"]),
        ("/no/such/directory", ["'/no/such/directory'", "not an existing directory", "module:function", "http://"]),
        ("just words", ["'just words'", "one of four forms"]),
        ("", ["one of four forms"]),
    ],
)
def test_load_judge_rejects_bad_specs(judge_module, spec, fragments):
    spec = spec.format(mod=judge_module)
    with pytest.raises(ValueError) as info:
        load_judge(spec)
    for fragment in fragments:
        assert fragment.format(mod=judge_module) in str(info.value)


def test_load_judge_http_builds_a_client():
    judge = load_judge("http://127.0.0.1:9/")
    from lm_runs.judges.http import HTTPJudge

    assert isinstance(judge, CheckedJudge) and isinstance(judge.inner, HTTPJudge)
    assert judge.inner.endpoint == "http://127.0.0.1:9/v1/classifications"
    judge.close()


# ------------------------------------------------------------------------------ preference model


@pytest.fixture(scope="module")
def tiny_pm(tmp_path_factory):
    from lm_runs.tiny import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny_pm"), num_labels=2, seed=3)


def _pairs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = "the cat dog runs fast slow red blue why how tell me a story yes no".split()

    def text(k):
        return " ".join(rng.choice(words, size=k))

    prompts = [text(int(rng.integers(1, 12))) for _ in range(n)]
    completions = [[text(int(rng.integers(1, 30))), text(int(rng.integers(1, 30)))] for _ in range(n)]
    return prompts, completions


def _direct(pm_dir, prompts, completions):
    """softmax(logits)[FIRST_IS_BETTER] for render_pair(p, a, b), one unpadded example at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(pm_dir).eval()
    out = []
    with torch.no_grad():
        for p, (a, b) in zip(prompts, completions):
            enc = tokenizer(render_pair(p, a, b), return_tensors="pt")
            out.append(model(**enc).logits.float().softmax(-1)[0, FIRST_IS_BETTER].item())
    return out


def test_preference_model_unshuffled_matches_direct_forward(tiny_pm):
    from lm_runs.judges.preference_model import PreferenceModelJudge

    prompts, completions = _pairs(13)
    judge = PreferenceModelJudge(tiny_pm, batch_size=4, shuffle_order=False)  # padded, length-sorted batches
    got = judge(prompts, completions)
    expected = _direct(tiny_pm, prompts, completions)
    assert judge.last_flips == [False] * 13
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_preference_model_unflips_shuffled_pairs(tiny_pm):
    from lm_runs.judges.preference_model import PreferenceModelJudge

    prompts, completions = _pairs(24, seed=1)
    judge = PreferenceModelJudge(tiny_pm, batch_size=5, seed=11)
    got = judge(prompts, completions)
    flips = judge.last_flips
    assert 0 < sum(flips) < len(flips)
    forward = _direct(tiny_pm, prompts, completions)  # P(a ≻ b) read as (a, b)
    backward = _direct(tiny_pm, prompts, [[b, a] for a, b in completions])  # P(b ≻ a) read as (b, a)
    expected = [1.0 - bw if flip else fw for fw, bw, flip in zip(forward, backward, flips)]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # the two readings differ for this random model, so the un-flip was really exercised
    assert max(abs(fw - (1.0 - bw)) for fw, bw, flip in zip(forward, backward, flips) if flip) > 1e-4
    assert all(0.0 <= v <= 1.0 for v in got)
    # per-call override: no shuffle gives the (a, b) reading everywhere
    np.testing.assert_allclose(judge(prompts, completions, shuffle_order=False), forward, atol=1e-6, rtol=0)


def test_preference_model_seeded_reproducibility(tiny_pm):
    from lm_runs.judges.preference_model import PreferenceModelJudge

    prompts, completions = _pairs(20, seed=2)
    first = PreferenceModelJudge(tiny_pm, seed=7)
    second = PreferenceModelJudge(tiny_pm, seed=7)
    other = PreferenceModelJudge(tiny_pm, seed=8)
    r1, r2 = first(prompts, completions), second(prompts, completions)
    assert r1 == r2 and first.last_flips == second.last_flips
    other(prompts, completions)
    assert other.last_flips != first.last_flips
    # the order is a coin per pair, not a stream: a later call (a resumed run, a retried request, the
    # pairs in another order or batch) shows each pair as before and gets the same answer
    earlier = dict(zip(map(tuple, completions), zip(first.last_flips, r1)))
    reordered = list(range(len(prompts)))[::-1][:13]
    again = first([prompts[i] for i in reordered], [completions[i] for i in reordered])
    for i, flip, value in zip(reordered, first.last_flips, again):
        assert (flip, value) == pytest.approx(earlier[tuple(completions[i])], abs=1e-6)


def test_load_judge_directory_gives_a_checked_preference_model(tiny_pm):
    from lm_runs.judges.preference_model import PreferenceModelJudge

    judge = load_judge(str(tiny_pm), seed=5, batch_size=3)
    assert isinstance(judge.inner, PreferenceModelJudge)
    assert judge.inner.batch_size == 3 and judge.name == tiny_pm.name
    prompts, completions = _pairs(6, seed=4)
    got = judge(prompts, completions, shuffle_order=False)
    np.testing.assert_allclose(got, _direct(tiny_pm, prompts, completions), atol=1e-6, rtol=0)
    assert all(isinstance(v, float) and not math.isnan(v) for v in judge(prompts, completions))


def test_preference_model_rejects_wrong_label_count(tmp_path):
    from lm_runs.judges.preference_model import PreferenceModelJudge
    from lm_runs.tiny import build_tiny_lm

    path = build_tiny_lm(tmp_path / "three", num_labels=3, n_layer=1, n_embd=16)
    with pytest.raises(ValueError, match=r"3 labels, expected 2"):
        PreferenceModelJudge(path)


def test_http_judge_scores_only_where_the_server_says_it_serves_a_reward_model():
    """``scores_responses()`` asks GET /health once: a reward model with its τ → True and ``rewards`` posts
    to /v1/scores in chunks; an older server (no judge_kind) or a failing /health → False (pairs as before);
    scores that are not one finite number per response → JudgeError."""
    import httpx

    from lm_runs.judges import JudgeError
    from lm_runs.judges.http import HTTPJudge

    seen: list[tuple[str, str]] = []

    def serve(health: dict | None, scores=None):
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append((request.method, request.url.path))
            if request.url.path == "/health":
                return httpx.Response(200, json=health) if health is not None else httpx.Response(500, json={"error": "x"})
            body = json.loads(request.content)
            answer = scores(body) if scores else json.dumps([float(len(r)) for r in body["responses"]])
            return httpx.Response(200, content=f'{{"id": "s", "model": "m", "scores": {answer}, "temperature": 0.5}}'.encode())
        return httpx.MockTransport(handler)

    rm = HTTPJudge("http://judge", chunk_size=2, transport=serve({"status": "ok", "model": "m", "judge_kind": "reward_model", "temperature": 0.5}))
    assert rm.scores_responses() and rm.scores_responses() and rm.temperature == 0.5 and rm.batch_size == 2
    assert rm.rewards(["p"] * 3, ["a", "bb", "ccc"]) == [1.0, 2.0, 3.0]
    assert seen == [("GET", "/health"), ("POST", "/v1/scores"), ("POST", "/v1/scores")]  # health once; 2 + 1 responses
    old = HTTPJudge("http://judge", transport=serve({"status": "ok", "model": "m"}))
    down = HTTPJudge("http://judge", transport=serve(None))
    assert not old.scores_responses() and not down.scores_responses()
    with pytest.raises(ValueError, match="does not serve a reward model"):
        old.temperature
    for bad in (lambda body: "[NaN, NaN]", lambda body: "[1.0]"):  # NaN as Python's decoder reads it; a short answer
        broken = HTTPJudge("http://judge", max_retries=0, transport=serve({"judge_kind": "reward_model", "temperature": 1.0}, bad))
        with pytest.raises(JudgeError, match="not one finite number each"):
            broken.rewards(["p", "p"], ["a", "b"])


def test_http_judge_identity_is_the_one_the_server_reports_else_its_url_with_one_warning(caplog):
    """``identity()`` is GET /health's ``identity`` (the served judge by content), asked once per client with
    ``scores_responses()``; a server that reports none (an older server) or whose /health fails is known by
    its URL, with exactly one warning per client saying why."""
    import logging

    import httpx

    from lm_runs.judges.http import HTTPJudge

    reported = {"kind": "reward_model", "files": {"model.safetensors": "ab12"}, "temperature": 0.5, "max_length": 1024}
    asked: list[str] = []

    def serve(status: int, health: dict):
        def handler(request: httpx.Request) -> httpx.Response:
            asked.append(request.url.path)
            return httpx.Response(status, json=health)
        return httpx.MockTransport(handler)

    new = HTTPJudge("http://judge:1/v1/classifications",
                    transport=serve(200, {"status": "ok", "model": "m", "judge_kind": "reward_model", "temperature": 0.5,
                                          "identity": reported}))
    with caplog.at_level(logging.WARNING, logger="lm_runs.judges.http"):
        assert new.identity() == reported and new.scores_responses() and CheckedJudge(new).identity() == reported
        assert asked == ["/health"] and not caplog.records
        for status, health, why in ((200, {"status": "ok", "model": "m", "judge_kind": "callable", "temperature": None},
                                     "reports no identity"), (503, {"error": "starting"}, "HTTP 503")):
            caplog.clear()
            old = HTTPJudge("http://judge:1", transport=serve(status, health))
            assert old.identity() == old.identity() == {"kind": "http", "url": "http://judge:1"}
            (warning,) = caplog.records  # once, though asked twice
            assert why in warning.getMessage() and "URL only" in warning.getMessage()


def test_http_judge_refuses_a_server_that_reports_another_judge_after_a_call():
    """Once /health pinned an identity, every call (pairs or scores) asks /health again after its answers:
    the same identity passes (one GET a call), another one or none (404) raises JudgeChanged naming the
    change, the call's answers discarded, and CheckedJudge.judge_or_missing lets it through instead of
    counting missing pairs; a server known by its URL only, or a client whose identity was never asked,
    makes no extra request."""
    import httpx

    from lm_runs.judges import JudgeChanged
    from lm_runs.judges.http import HTTPJudge

    a = {"kind": "callable", "module": "m", "qualname": "a", "source_sha256": "1"}
    state = {"identity": a, "health_status": 200}
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/health":
            return httpx.Response(state["health_status"], json={"status": "ok", "model": "m", "judge_kind": "callable",
                                                                "temperature": 1.0, "identity": state["identity"]})
        body = json.loads(request.content)
        if request.url.path == "/v1/scores":
            return httpx.Response(200, json={"scores": [0.5] * len(body["prompts"]), "model": "m"})
        return httpx.Response(200, json={"results": [0.25] * len(body["prompts"]), "model": "m"})

    judge = HTTPJudge("http://judge:1", max_retries=0, transport=httpx.MockTransport(handler))
    assert judge(["p"], [["x", "y"]]) == [0.25] and asked == ["/v1/classifications"]  # nothing pinned yet: no check
    assert judge.identity() == a
    asked.clear()
    assert judge(["p", "q"], [["x", "y"], ["y", "x"]]) == [0.25, 0.25] and judge.rewards(["p"], ["x"]) == [0.5]
    assert asked == ["/v1/classifications", "/health", "/v1/scores", "/health"]
    state["identity"] = {**a, "qualname": "b", "source_sha256": "2"}
    for call in (lambda: judge(["p"], [["x", "y"]]), lambda: judge.rewards(["p"], ["x"]),
                 lambda: CheckedJudge(judge).judge_or_missing(["p", "q"], [["x", "y"], ["y", "x"]])):
        with pytest.raises(JudgeChanged) as changed:
            call()
        message = str(changed.value)
        assert message.startswith("judge server http://judge:1 now serves another judge than the one this run started with ")
        assert "qualname: 'a' → 'b'; source_sha256: '1' → '2'" in message and "\n" not in message
    state["identity"], state["health_status"] = a, 404  # another server at the URL, reporting no identity
    with pytest.raises(JudgeChanged, match=r"than the one this run started with \(it reports no identity now\)"):
        judge(["p"], [["x", "y"]])
    url_only = HTTPJudge("http://judge:1", max_retries=0, transport=httpx.MockTransport(handler))
    assert url_only.identity() == {"kind": "http", "url": "http://judge:1"}
    asked.clear()
    assert url_only(["p"], [["x", "y"]]) == [0.25] and asked == ["/v1/classifications"]
