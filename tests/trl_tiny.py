"""
Helpers for tests/test_trl.py: RTTGRPOTrainer on tiny models, with a fixed rollout and a judge that needs no checker.

Also the worker of the two-process test (gloo, CPU): each process judges and scores its half of one fixed
generation batch (a group straddles the two) and saves its rows' advantages.

    torchrun --nproc_per_node 2 tests/trl_tiny.py OUT_DIR
"""
import sys
import tempfile
import types
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny import tiny_causal_lm, tiny_token_classifier, tiny_tokenizer  # noqa: E402

G = 4                                   # responses per prompt in every test
MAX_NEW = 10                            # max_completion_length
PROMPT_ROWS = [0] * G + [1] * G + [2] * G   # one fixed generation batch: 3 groups, 12 rows, prompt-major
TWO_PROCESS_CASES = {"intra": dict(norm="intra"), "inter": dict(norm="inter", eos_relevance="zero"),
                     "quirks": dict(reference_quirks=True), "grpo-csr": dict(algo="grpo", union="csr"),
                     "paper-credit": dict(norm="intra", token_credit="all")}


def rubric_prompts():
    """Three prompts with 2, 1 and 3 constraints (so the constraint axis is padded)."""
    from data import RubricItem, RubricPrompt
    items = ["Do not use any commas.", "Answer in lowercase.", "Include the word robot."]
    sizes = [2, 1, 3]
    return [RubricPrompt(id=f"p{i}", messages=[{"role": "user", "content": f"Write a short story number {i}."}],
                         rubrics=[RubricItem(description=d) for d in items[:k]]) for i, k in enumerate(sizes)]


class StubJudge:
    """Verdicts from a checksum of the text (the same in every process); tie=True: every response meets all its
    constraints but the last, so every response fails AON (every group tied)."""

    def __init__(self, tie: bool = False):
        self.tie = tie

    def score(self, prompts, texts, prompt_index):
        K = max(len(prompts[i].rubrics) for i in prompt_index)
        scores = torch.zeros(len(texts), K, dtype=torch.int8)                        # [B, K]
        for b, (text, p) in enumerate(zip(texts, prompt_index)):
            for k in range(len(prompts[p].rubrics)):
                met = k < len(prompts[p].rubrics) - 1 if self.tie else (zlib.crc32(text.encode()) >> k) % 3 != 0
                scores[b, k] = 1 if met else -1
        return scores, {}


def fixed_completion(row: int, eos: int) -> list:
    """Token ids of the response of global row `row`: lengths 3 to MAX_NEW, every fourth one cut off (no EOS)."""
    n = 3 + (row * 5) % (MAX_NEW - 2)
    ids = [(row * 37 + 11 * t) % 300 + 20 for t in range(n)]
    return ids[:MAX_NEW] if row % 4 == 3 else ids[:n - 1] + [eos]


def _fixed_generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kw):
    first = self.accelerator.process_index * len(prompt_ids)          # global index of this process's first row
    return [fixed_completion(first + i, self._tokenizer.eos_token_id) for i in range(len(prompt_ids))], None


def tiny_discriminator(tok):
    """A tiny discriminator whose relevance varies from token to token (head weights scaled up)."""
    disc = tiny_token_classifier(tok)
    with torch.no_grad():
        disc.score.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    return disc


def make_trainer(tok=None, judge=None, discriminator="tiny", seed=0, **kw):
    """An RTTGRPOTrainer on a fresh tiny policy whose rollout is `fixed_completion`. Keywords: GRPOConfig fields and
    the trainer's RTT flags (algo, union, norm, combine, token_weight, relevance, token_std_floor)."""
    from datasets import Dataset
    from trl import GRPOConfig

    from scale.trl_rtt import RTTGRPOTrainer
    tok = tok or tiny_tokenizer()
    rtt_keys = ("algo", "union", "norm", "combine", "token_weight", "relevance", "reference_quirks",
                "token_std_floor", "eos_relevance", "token_credit")
    rtt = {k: kw.pop(k) for k in rtt_keys if k in kw}
    prompts = rubric_prompts()
    dataset = Dataset.from_list([{"prompt": p.messages, "prompt_id": i} for i, p in enumerate(prompts)])
    config = dict(output_dir=str(Path(tempfile.gettempdir()) / "rtt-trl-test-unused"), report_to="none", use_cpu=True,
                  num_generations=G, per_device_train_batch_size=len(PROMPT_ROWS), steps_per_generation=1,
                  max_completion_length=MAX_NEW, max_steps=1, epsilon=0.2, epsilon_high=0.27, beta=0.0,
                  save_strategy="no", temperature=1.0, seed=seed, disable_tqdm=True,
                  bf16=False)                            # TRL defaults to bf16 autocast, even on a CPU
    config.update(kw)
    trainer = RTTGRPOTrainer(model=tiny_causal_lm(tok, seed), args=GRPOConfig(**config), train_dataset=dataset,
                             processing_class=tok, rubric_prompts=prompts, judge=judge or StubJudge(),
                             discriminator=(tiny_discriminator(tok), tok) if discriminator == "tiny" else discriminator,
                             **rtt)
    trainer._generate_single_turn = types.MethodType(_fixed_generate_single_turn, trainer)
    return trainer


def generation_batch(trainer, rows=PROMPT_ROWS):
    return [trainer.train_dataset[i] for i in rows]


def reference_advantages(trainer, **flags):
    """What train.py computes for the whole fixed batch in one process: advantages.rtt_advantages on [P, G, K, T]
    (or grpo_advantages), from the same verdicts and relevance. flags: the trainer's keywords (algo, union, norm,
    reference_quirks, eos_relevance, token_credit). Returns {response token ids: advantage row}."""
    import advantages as adv
    import discriminator as disc_lib
    tok, prompts = trainer.processing_class, trainer.rubric_prompts
    B = len(PROMPT_ROWS)
    responses = [fixed_completion(r, tok.eos_token_id) for r in range(B)]
    T = max(len(r) for r in responses)
    ids = torch.full((B, T), tok.pad_token_id)                                         # [B, T]
    mask = torch.zeros(B, T, dtype=torch.long)                                         # [B, T]
    for b, r in enumerate(responses):
        ids[b, :len(r)], mask[b, :len(r)] = torch.tensor(r), 1
    texts = tok.batch_decode(responses, skip_special_tokens=True)
    scores, _ = trainer.judge.score(prompts, texts, PROMPT_ROWS)                      # [B, K]
    K = scores.shape[1]
    P = B // G
    if flags.get("algo") == "grpo":
        A = adv.grpo_advantages(adv.response_rewards(scores.view(P, G, K), flags.get("union", "aon")))
        A = A.view(B, 1) * mask                                                        # [B, T]
    else:
        criteria = [[item.description for item in prompts[p].rubrics] for p in PROMPT_ROWS]
        w = disc_lib.relevance(trainer.disc[0], trainer.disc[1], ids, mask, criteria, K)   # [B, K, T]
        stop = adv.stop_token_mask(ids, mask, tok.all_special_ids)                          # [B, T]
        A, _ = adv.rtt_advantages(scores.view(P, G, K), w.view(P, G, K, T), mask.view(P, G, T),
                                  union=flags.get("union", "aon"), norm=flags.get("norm", "intra"),
                                  reference_quirks=flags.get("reference_quirks", False),
                                  stop_mask=stop.view(P, G, T), eos=flags.get("eos_relevance"),
                                  credit=flags.get("token_credit"))           # None: the trainer's default
        A = A.view(B, T)
    return {tuple(r): A[b, :len(r)] for b, r in enumerate(responses)}


def advantages_by_response(output) -> dict:
    """{response token ids: advantage row} of a TRL batch (rows identified by their tokens, whatever the order)."""
    out = {}
    for ids, m, a in zip(output["completion_ids"], output["completion_mask"], output["advantages"]):
        n = int(m.sum())
        out[tuple(ids[:n].tolist())] = a[:n].detach().cpu()
    return out


if __name__ == "__main__":  # the two-process worker: torchrun --nproc_per_node 2 tests/trl_tiny.py OUT_DIR
    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1])
    results = {}
    for name, flags in TWO_PROCESS_CASES.items():
        # 2 processes x 3 rows x 2 steps per generation = 12 rows: process 0 has group 0 and half of group 1
        trainer = make_trainer(**flags, per_device_train_batch_size=3, steps_per_generation=2)
        rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
        rows = PROMPT_ROWS[rank * len(PROMPT_ROWS) // world:(rank + 1) * len(PROMPT_ROWS) // world]
        trainer.model.train()
        output = trainer._generate_and_score_completions(generation_batch(trainer, rows))
        results[name] = advantages_by_response(output)
    torch.save({"world": world, "results": results}, out_dir / f"rank{rank}.pt")
    if torch.distributed.is_initialized():   # leave the group before exit: otherwise gloo's threads can abort teardown
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
