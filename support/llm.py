"""
The LLM judge's backends: anything with `.generate(list of chats) -> list of replies`, one reply per chat.

    LocalLLM("smollm2-135m")                                      a transformers causal LM, batched greedy generation
    EndpointLLM("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct")   any OpenAI-compatible chat endpoint

judge.Judge sends them the YES/NO prompts (judge.judge_messages) and parses their replies (judge.parse_verdict);
the discriminator's label tools (support/discriminator_cli.py) use the same two as their editor LLM. An endpoint
that stays down (or refuses the request) raises JudgeEndpointError, a fault the user can fix (support/errors.py).
"""
import concurrent.futures
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request

from support.errors import ProjectError

log = logging.getLogger("rtt.judge")  # the judge's logger: its warnings read (and are filtered) as before


class LocalLLM:
    """A transformers causal LM as the judge: batched greedy generation of a few tokens over all pending pairs.

    LocalLLM("smollm2-135m") loads through support/models.py; LocalLLM(model, tokenizer) uses objects already loaded.
    """

    def __init__(self, model_name_or_model, tokenizer=None, batch_size: int = 16, max_new_tokens: int = 4,
                 device=None):
        from support import models  # imports torch: only when a local judge is built
        if isinstance(model_name_or_model, str):
            tokenizer = tokenizer or models.load_tokenizer(model_name_or_model)
            model_name_or_model = models.load_causal_lm(model_name_or_model, device=device)
        if tokenizer is None:
            raise ValueError("LocalLLM(model, tokenizer): pass the tokenizer with a model object")
        self.model, self.tokenizer = model_name_or_model.eval(), tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def _text(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        import torch
        tok = self.tokenizer
        pad_side, tok.padding_side = tok.padding_side, "left"  # batched generation needs left padding
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        texts = [self._text(c) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        out = [""] * len(texts)
        device = next(self.model.parameters()).device
        try:
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(device) for k, v in enc.items()}
                with torch.no_grad():
                    gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                              temperature=None, top_p=None, top_k=None,
                                              pad_token_id=tok.pad_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]  # [b, new_tokens]
                for i, ids in zip(idx, new):
                    out[i] = tok.decode(ids, skip_special_tokens=True)
        finally:
            tok.padding_side = pad_side
        return out


class JudgeEndpointError(ProjectError, RuntimeError):
    """The OpenAI-compatible judge endpoint did not answer (after all retries) or refused the request."""


class EndpointLLM:
    """Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, a hosted API) as the judge.

    url: the base URL (".../v1") or the full ".../chat/completions" URL. model: the model name the server expects.
    Greedy (temperature 0), `max_tokens` new tokens. Each try gets `timeout` seconds, reading the answer's body
    included (a server that trickles its body in is cut off, not read for minutes). A failed try: connection
    errors, timeouts, HTTP 429 and 5xx, and an unusable answer (not JSON, another shape than
    {"choices": [{"message": {"content": str}}]}, larger than MAX_REPLY_BYTES, cut short); failed tries are retried
    `retries` times with exponential back-off (backoff * 2**attempt s). Other HTTP errors fail at once.
    `concurrency` requests run in parallel (threads). The API key, if any, comes from the argument or the
    RTT_JUDGE_API_KEY environment variable. Standard library only (urllib).
    """

    def __init__(self, url: str, model: str = "default", timeout: float = 60.0, retries: int = 4,
                 concurrency: int = 8, max_tokens: int = 8, backoff: float = 1.0, api_key: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise JudgeEndpointError(f"judge endpoint {url!r} is not an http:// or https:// URL, pass the server's "
                                     "base URL, e.g. http://127.0.0.1:8000/v1")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.timeout, self.retries = model, timeout, retries
        self.concurrency, self.max_tokens, self.backoff = concurrency, max_tokens, backoff
        self.api_key = api_key or os.environ.get("RTT_JUDGE_API_KEY")

    def _one(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return reply_content(self._post(body, headers))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code != 429 and e.code < 500:
                    raise JudgeEndpointError(f"judge endpoint {self.url} refused the request: {last}: "
                                             f"{e.read()[:300]!r}, check --judge-url and --judge-name") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (ValueError, RecursionError) as e:  # not JSON / not UTF-8 / another shape / nested too deeply
                last = f"unusable answer ({type(e).__name__}: {str(e)[:200]})"
            log.warning("judge endpoint %s: attempt %d/%d failed: %s", self.url, attempt + 1, self.retries + 1, last)
        raise JudgeEndpointError(f"judge endpoint {self.url} is down: no answer after {self.retries + 1} tries "
                                 f"(timeout {self.timeout}s each); last error: {last}. Is the server running "
                                 f"(e.g. `vllm serve MODEL`) and does --judge-url point at its /v1?")

    def _post(self, body: bytes, headers: dict):
        """POST and read the answer as JSON within `timeout` seconds in all. urllib's own timeout bounds each
        socket operation, not the request: the body is read in pieces and the clock checked between them."""
        deadline = time.monotonic() + self.timeout
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            pieces, size = [], 0
            while piece := r.read1(65536):
                pieces.append(piece)
                size += len(piece)
                if size > MAX_REPLY_BYTES:
                    raise ValueError(f"answer larger than {MAX_REPLY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"answer not complete after {self.timeout}s ({size} bytes so far)")
        return json.loads(b"".join(pieces).decode("utf-8"))

    def generate(self, conversations: list[list[dict]]) -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, conversations))


MAX_REPLY_BYTES = 1 << 20  # a YES/NO answer is a few hundred bytes; anything past 1 MiB is not a judge's answer


def reply_content(reply) -> str:
    """The text of an OpenAI chat-completions answer; ValueError when the JSON has another shape.

    >>> reply_content({"choices": [{"message": {"role": "assistant", "content": "YES"}}]})
    'YES'
    """
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError(f"no choices[0] in the answer: {str(reply)[:120]}")
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise ValueError(f"choices[0].message.content is not a string: {str(choices[0])[:120]}")
    return message["content"]
