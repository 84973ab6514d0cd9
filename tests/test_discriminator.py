"""The relevance discriminator: template, alignment with the rollout's tokens, diff -> token labels, label sources,
training, metrics, CLI. Tiny models (tests/tiny.py) except the one `real_model` test."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import discriminator as D
from labels import rule_edits, llm_labels as LL, make_labels as L
from support import discriminator_build as B, discriminator_cli as cli, discriminator_metrics as M, models, schedule

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_disc(tiny_tok):
    from tiny import tiny_token_classifier
    return tiny_token_classifier(tiny_tok)


def _rollout_like(tok, texts, T=None):
    """response_ids / response_mask as rollout.py makes them: right-padded with pad (= eos) after the EOS."""
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    T = T or max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def _single(model, tok, criterion, ids):
    """Reference: one unpadded forward pass for one pair, read at the response positions."""
    seq, start = D.build_inputs(tok, criterion, ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0, :, 0]
    return torch.sigmoid(logits[start:])


# ---- template and inputs ---------------------------------------------------------------------------------------

def test_template_is_the_reference_text():
    assert D.TEMPLATE == ("Identify which tokens in the response are relevant to the criteria.\n\n"
                          "Criteria: {criterion}\n\nResponse:\n\n")


def test_build_inputs_appends_response_ids_unchanged(tiny_tok):
    crit = "Include keywords ['cabin'] in the response."
    prefix = D.prefix_ids(tiny_tok, crit)
    assert tiny_tok.decode(prefix) == D.TEMPLATE.format(criterion=crit)
    response = [5, 7, 300, 9, tiny_tok.eos_token_id]           # ids as the policy sampled them, EOS included
    seq, start = D.build_inputs(tiny_tok, crit, torch.tensor(response))
    assert start == len(prefix) and seq[:start] == prefix and seq[start:] == response
    assert D.build_inputs(tiny_tok, crit, response, prefix=prefix) == (seq, start)


# ---- inference: alignment with the rollout tensors -------------------------------------------------------------

def test_relevance_alignment_eos_and_padding(tiny_disc, tiny_tok):
    texts = ["The cabin is warm.", "Hello world, this is a longer answer with more tokens in it.", "Ok"]
    ids, mask = _rollout_like(tiny_tok, texts)                                             # [B, T]
    criteria = [["Include keywords ['cabin'] in the response.", "Answer with less than 9 words."],
                ["Wrap your entire response with double quotation marks."],
                []]                                                                          # K_b = 2, 1, 0
    K = 3
    w = D.relevance(tiny_disc, tiny_tok, ids, mask, criteria, K, batch_tokens=64)           # several batches
    assert w.shape == (3, K, ids.shape[1]) and w.dtype == torch.float32
    assert ((w >= 0) & (w <= 1)).all()
    for b in range(3):
        n = int(mask[b].sum())                                                               # EOS included
        for k in range(K):
            if k < len(criteria[b]):
                ref = _single(tiny_disc, tiny_tok, criteria[b][k], ids[b, :n].tolist())
                assert torch.allclose(w[b, k, :n], ref, atol=1e-5)                           # token for token
                assert w[b, k, n - 1] > 0                                                    # the EOS is scored
            else:
                assert (w[b, k] == 0).all()                                                  # padded slot
        assert (w[b, :, n:] == 0).all()                                                      # padded tokens
    # one big batch gives the same numbers as many small ones
    assert torch.allclose(w, D.relevance(tiny_disc, tiny_tok, ids, mask, criteria, K, batch_tokens=10 ** 6), atol=1e-5)


def test_relevance_left_padded_responses_read_only_masked_tokens(tiny_disc, tiny_tok):
    ids, mask = _rollout_like(tiny_tok, ["a short one", "and a somewhat longer response here"])
    crit = [["Answer in lowercase."]] * 2
    w_right = D.relevance(tiny_disc, tiny_tok, ids, mask, crit, 1)
    shift = [int((1 - m).sum()) for m in mask]                    # move every row to the right end
    ids_l = torch.stack([torch.roll(r, s) for r, s in zip(ids, shift)])
    mask_l = torch.stack([torch.roll(m, s) for m, s in zip(mask, shift)])
    w_left = D.relevance(tiny_disc, tiny_tok, ids_l, mask_l, crit, 1)
    for b, s in enumerate(shift):
        assert torch.allclose(torch.roll(w_left[b, 0], -s), w_right[b, 0], atol=1e-5)


def test_relevance_rejects_bad_inputs(tiny_disc, tiny_tok):
    ids, mask = _rollout_like(tiny_tok, ["x y z"])
    with pytest.raises(ValueError):
        D.relevance(tiny_disc, tiny_tok, ids, mask, [["a", "b"]], K=1)            # more criteria than K
    bad = ids.clone()
    bad[0, 0] = 10 ** 6
    with pytest.raises(D.DiscriminatorError, match="vocabulary"):
        D.relevance(tiny_disc, tiny_tok, bad, mask, [["a"]], K=1)


def test_tokenizer_check_refuses_another_vocabulary(tiny_tok):
    from tiny import tiny_tokenizer
    other = tiny_tokenizer()
    D.check_tokenizer(other, tiny_tok)                           # same vocabulary: fine
    other.add_tokens(["<extra_token>"])
    with pytest.raises(D.DiscriminatorError, match="share the policy's tokenizer"):
        D.check_tokenizer(other, tiny_tok)


# ---- labels: diff -> tokens ------------------------------------------------------------------------------------

OFFS = [(0, 3), (3, 7), (7, 12), (12, 13), (13, 14)]      # "the" " red" " cats" "." EOS (hand-made offsets)


def test_token_labels_on_hand_made_offsets():
    text = "the red cats."
    assert L.token_labels(OFFS, rule_edits.edit_char_spans(text, "the big cats.")) == [0, 1, 0, 0, 0]   # substitution
    assert L.token_labels(OFFS, rule_edits.edit_char_spans(text, "the cats.")) == [0, 1, 0, 0, 0]       # deletion
    assert L.token_labels(OFFS, rule_edits.edit_char_spans(text, "the red, cats.")) == [0, 0, 1, 0, 0]  # insertion
    assert L.token_labels(OFFS, rule_edits.edit_char_spans(text, "the red cats.!")) == [0, 0, 0, 0, 1]  # at the end: EOS
    assert L.token_labels(OFFS, rule_edits.edit_char_spans(text, "the red cat.")) == [0, 0, 1, 0, 0]    # inside a word


def test_diff_token_labels_multi_token_word(tiny_tok):
    """"robotics" is several tokens of the tiny BPE: replacing the word labels all of them, nothing else."""
    text = "We like robotics a lot."
    ids, labels = L.diff_token_labels(tiny_tok, text, "We like cooking a lot.")
    pieces = [tiny_tok.decode([i]) for i in ids]
    on = "".join(p for p, l in zip(pieces, labels) if l)
    assert on.strip() == "robotics" and sum(labels) >= 2
    assert ids[-1] == tiny_tok.eos_token_id and labels[-1] == 0
    _, labels_end = L.diff_token_labels(tiny_tok, text, text + " Thanks!")   # appended text -> the EOS
    assert labels_end[-1] == 1 and sum(labels_end) == 1


def test_make_record_whole_scope_labels_every_token(tiny_tok):
    row = L.make_record(tiny_tok, "all lowercase here", criterion="c", family="change_case:english_lowercase",
                        prompt_id="p1", source="rule", scope=rule_edits.WHOLE)
    assert row["labels"] == [1] * len(row["ids"]) and row["ids"][-1] == tiny_tok.eos_token_id
    assert set(row) >= {"prompt_id", "family", "criterion", "source", "scope", "text", "ids", "labels"}


# ---- label sources with LLMs (a scripted fake LLM) ------------------------------------------------------------

class FakeLLM:
    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def generate(self, conversations):
        self.seen += conversations
        return [self.replies.pop(0) for _ in conversations]


def _prompt(items):
    data = pytest.importorskip("data")
    return data.RubricPrompt(id="p0", messages=[{"role": "user", "content": "Write."}],
                             rubrics=[data.RubricItem(d, {"instruction_id": i, "kwargs": k}) for d, i, k in items])


def test_llm_edit_labels_keeps_only_verified_edits(tiny_tok):
    pytest.importorskip("judge")
    p = _prompt([("Include keywords ['cabin'] in the response.", "keywords:existence", {"keywords": ["cabin"]}),
                 ("No commas.", "punctuation:no_comma", {})])
    text = "We stayed in a cabin by the lake."
    llm = FakeLLM(["We stayed in a house by the lake.",          # breaks only the keyword: kept
                   "We stayed, in a house by the lake."])        # breaks both: dropped
    counts = {}
    rows = LL.llm_edit_labels(llm, [p], [(0, text)], tiny_tok, counts)
    assert len(rows) == 1 and counts == {"kept": 1, "dropped_flips_other": 1}
    row = rows[0]
    on = "".join(tiny_tok.decode([i]) for i, l in zip(row["ids"], row["labels"]) if l)
    assert on.strip() == "cabin" and row["source"] == "editor_llm" and row["verified"] is True
    assert "Criterion to break: Include keywords" in llm.seen[0][0]["content"]
    # a response that does not meet every constraint is not edited at all
    counts = {}
    assert LL.llm_edit_labels(FakeLLM([]), [p], [(0, "No keyword, here.")], tiny_tok, counts) == []
    assert counts == {"response_not_all_met": 1}


def test_parse_extraction_counts_bad_replies():
    resp = "The cabin is warm. The cabin is old."
    c = {}
    assert LL.parse_extraction('{"type": "partial relevant", "relevant texts": ["cabin", "tent"]}', resp, c) \
        == [(4, 9), (23, 28)]
    assert c == {"quotes_kept": 1, "quotes_not_found": 1}
    c = {}
    assert LL.parse_extraction("no json here", resp, c) is None
    assert LL.parse_extraction('{"type": "maybe"}', resp, c) is None
    assert LL.parse_extraction('{"type": "partial relevant", "relevant texts": ["tent"]}', resp, c) is None
    assert LL.parse_extraction('{"type": "partial relevant", "relevant texts": [', resp, c) is None
    assert c == {"malformed": 2, "bad_type": 1, "quotes_not_found": 1, "no_matching_quote": 1}
    assert LL.parse_extraction('```json\n{"type": "All relevant"}\n```', resp) == "all"
    assert LL.parse_extraction('{"type": "all irrelevant", "relevant texts": []}', resp) == "none"


def test_extraction_labels(tiny_tok):
    p = _prompt([("Include keywords ['cabin'] in the response.", "keywords:existence", {"keywords": ["cabin"]}),
                 ("No commas.", "punctuation:no_comma", {})])
    llm = FakeLLM(['{"type": "partial relevant", "relevant texts": ["cabin"]}', '{"type": "all relevant"}'])
    counts = {}
    rows = LL.extraction_labels(llm, [p], [(0, "A cabin.")], tiny_tok, counts)
    assert [r["source"] for r in rows] == ["extraction"] * 2
    assert sum(rows[0]["labels"]) >= 1 and rows[1]["labels"] == [1] * len(rows[1]["ids"])


# ---- training ---------------------------------------------------------------------------------------------------

def _toy_rows(tok, n=24):
    """Rows whose relevant tokens are the word "cabin" (a learnable toy task)."""
    rows, words = [], ["cabin", "house", "boat", "tent"]
    for i in range(n):
        text = f"We saw a {words[i % 4]} and a {words[(i + 1) % 4]} today."
        spans = [(m, m + 5) for m in range(len(text)) if text.startswith("cabin", m)]
        rows.append(L.make_record(tok, text, criterion="Include keywords ['cabin'] in the response.",
                                  family="keywords:existence", prompt_id=f"p{i}", source="test", spans=spans))
    return rows


def test_training_reduces_loss_and_reloads(tiny_tok, tmp_path):
    from tiny import tiny_token_classifier
    model = tiny_token_classifier(tiny_tok, seed=1)
    rows = _toy_rows(tiny_tok)
    examples = D.encode_rows(tiny_tok, rows)
    ids, attn, labels = D.collate(examples, models.pad_id_of(tiny_tok))
    with torch.no_grad():
        before = D.token_bce(model(input_ids=ids, attention_mask=attn).logits[..., 0], labels).item()
    cfg = D.TrainConfig(lr=3e-3, epochs=8, batch_size=8, micro_batch_tokens=128)
    hist = D.train_discriminator(model, tiny_tok, examples, cfg, log=lambda *a: None)
    with torch.no_grad():
        after = D.token_bce(model(input_ids=ids, attention_mask=attn).logits[..., 0], labels).item()
    assert hist["steps"] == 24 and after < 0.5 * before
    path = D.save_discriminator(model, tiny_tok, tmp_path / "disc", {"note": "test"})
    again, tok2 = D.load_discriminator(path, policy_tokenizer=tiny_tok, device="cpu")
    pairs = [(r["criterion"], r["ids"]) for r in rows[:3]]
    for a, b in zip(D.score_pairs(model, tiny_tok, pairs), D.score_pairs(again, tok2, pairs)):
        assert torch.allclose(a, b, atol=1e-5)
    assert json.loads((path / "rtt_discriminator.json").read_text()) == {"note": "test"}


def test_load_refuses_untrained_head(tiny_dir):
    with pytest.raises(D.DiscriminatorError, match="no trained relevance head"):
        D.load_discriminator(tiny_dir, device="cpu")


def test_token_bce_ignores_unlabelled_positions():
    logits = torch.tensor([[5.0, 0.0, -3.0]])
    labels = torch.tensor([[-1.0, 1.0, 0.0]])
    expect = (math.log(2) + math.log1p(math.exp(-3))) / 2
    assert D.token_bce(logits, labels).item() == pytest.approx(expect, rel=1e-5)


def test_split_by_prompt_and_schedule():
    rows = [{"prompt_id": f"p{i // 3}"} for i in range(300)]
    train, ev = M.split_by_prompt(rows, 0.2, seed=1)
    assert {r["prompt_id"] for r in train}.isdisjoint({r["prompt_id"] for r in ev})
    assert 0.1 < len(ev) / len(rows) < 0.3 and (train, ev) == M.split_by_prompt(rows, 0.2, seed=1)
    f = [schedule.lr_multiplier(s, max(1, round(0.03 * 100)), 100, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(1 / 3) and f[2] == 1.0 and f[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(f[2:], f[3:]))


# ---- metrics on literal inputs ----------------------------------------------------------------------------------

def test_auroc_literal():
    assert M.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert M.auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5                     # ties count one half
    assert M.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert math.isnan(M.auroc([0.3, 0.4], [1, 1]))


def test_token_metrics_literal():
    m = M.token_metrics([0.9, 0.7, 0.2, 0.6, 0.1, 0.4], [1, 1, 1, 0, 0, 0])
    # TP 2 (0.9, 0.7), FN 1 (0.2), FP 1 (0.6), TN 2
    assert (m["tokens"], m["positives"]) == (6, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(7 / 9)                     # 7 of 9 (pos, neg) pairs ordered
    none = M.token_metrics([0.1, 0.2], [0, 0])
    assert (none["precision"], none["recall"], none["f1"]) == (1.0, 1.0, 1.0) and math.isnan(none["auroc"])


def test_metrics_by_family_literal():
    out = M.metrics_by_family([[0.9, 0.1], [0.8, 0.7, 0.6]], [[1, 0], [1, 1, 1]], ["a", "b"],
                              [rule_edits.SPAN, rule_edits.WHOLE])
    assert list(out) == ["a", "b", "ALL", "ALL span"]
    assert out["a"]["f1"] == 1.0 and out["b"]["rows"] == 1 and out["ALL"]["tokens"] == 5
    assert out["ALL span"]["tokens"] == 2


# ---- CLI --------------------------------------------------------------------------------------------------------

def test_cli_train_eval_show_smoke(tiny_dir, tiny_tok, tmp_path):
    labels = tmp_path / "labels.jsonl"
    L.write_jsonl(_toy_rows(tiny_tok, 16), labels)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = tmp_path / "disc"

    def run(*args):
        r = subprocess.run([sys.executable, str(ROOT / "discriminator.py"), *args], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    txt = run("train", "--labels", str(labels), "--policy", str(tiny_dir), "--out", str(out), "--epochs", "1",
              "--lr", "1e-3", "--eval-frac", "0.25")
    assert "saved to" in txt and (out / "config.json").exists()
    assert json.loads((out / "config.json").read_text())["rtt_head_trained"] is True
    again = tmp_path / "disc-again"                               # the same command again: the same weights
    run("train", "--labels", str(labels), "--policy", str(tiny_dir), "--out", str(again), "--epochs", "1",
        "--lr", "1e-3", "--eval-frac", "0.25")
    assert (out / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    txt = run("eval", "--model", str(out), "--labels", str(labels), "--split", "all")
    assert "keywords:existence" in txt and "AUROC" in txt
    txt = run("show", "--model", str(out), "--criterion", "Include keywords ['cabin'].", "--text", "A cabin.",
              "--color")
    assert "\x1b[48;2;" in txt and "Criterion:" in txt
    for argv in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0


def test_discriminator_head_has_no_dropout(tiny_dir):
    from support import models
    model = models.load_token_classifier(str(tiny_dir), device="cpu")     # a plain LM folder: new head
    assert model.config.classifier_dropout == 0.0
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    model.train()                                                           # training mode changes nothing
    x = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(input_ids=x).logits, model(input_ids=x).logits)


# ---- the embedded model (one short test) -------------------------------------------------------------------------

@pytest.mark.real_model
def test_real_model_alignment_and_labels():
    from support import models
    tok = models.load_tokenizer("smollm2-135m")
    model = models.load_token_classifier("smollm2-135m", device="cpu")
    assert model.dropout.p == 0.0 and model.config.classifier_dropout == 0.0   # like the reference value head
    text = "P.S. The cabin 😊 is warm."
    ids, mask = _rollout_like(tok, [text, "Ok."])
    crit = [["Include keywords ['cabin'] in the response.", "Please use an emoji at the end of every sentence."],
            ["Wrap your entire response with double quotation marks."]]
    w = D.relevance(model, tok, ids, mask, crit, K=2)
    n = int(mask[0].sum())
    assert torch.allclose(w[0, 1, :n], _single(model, tok, crit[0][1], ids[0, :n].tolist()), atol=1e-4)
    assert (w[1, 1] == 0).all() and (w[0, :, n:] == 0).all()
    # a multi-byte emoji split over several byte tokens: removing it labels exactly those tokens
    _, labels = L.diff_token_labels(tok, text, "P.S. The cabin is warm.")
    on = tok.decode([i for i, l in zip(ids[0, :n].tolist(), labels) if l])
    assert on.strip() == "😊"


def test_reuse_samples_and_split_keep_a_base_sample_on_one_side():
    triples = L.reuse_samples([(0, "a"), (1, "b")], 5)
    assert triples == [(0, "a", 0), (1, "b", 1), (2, "a", 0), (3, "b", 1), (4, "a", 0)]
    rows = [{"prompt_id": f"p{pi}", "base_prompt_id": f"p{src % 7}"} for pi, src in enumerate(range(200))]
    train, ev = M.split_by_prompt(rows, 0.3, seed=0)
    assert {r["base_prompt_id"] for r in train}.isdisjoint({r["base_prompt_id"] for r in ev})


def test_ensure_returns_an_existing_discriminator_after_checking_its_vocabulary(tiny_tok, tmp_path):
    from tiny import tiny_causal_lm, tiny_token_classifier, tiny_tokenizer
    path = D.save_discriminator(tiny_token_classifier(tiny_tok), tiny_tok, tmp_path / "disc")
    assert B.ensure_discriminator(str(path), path, log=lambda *a: None) == path     # no labelling, no training
    other = tiny_tokenizer()
    other.add_tokens(["<extra_token>"])
    tiny_causal_lm(other).save_pretrained(tmp_path / "other")                        # a policy with another vocab
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(D.DiscriminatorError):
        B.ensure_discriminator(str(tmp_path / "other"), path, log=lambda *a: None)
