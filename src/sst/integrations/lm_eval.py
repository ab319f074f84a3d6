"""Score a run or export on lm-evaluation-harness tasks (``sst eval --lm-eval TASKS``).

The harness asks a model three things: log p(continuation | context) with whether greedy decoding
would produce it, the rolling log-likelihood of a whole text, and greedy generation until a stop
string. ``HarnessLM`` answers them with any causal LM of ours and the run's tokenizer, one request
at a time (tiny models). ``lm_eval`` is imported only here; its task data must be available locally.
"""

from __future__ import annotations

import torch
from torch import nn

from sst.errors import UsageError, require_package
from sst.inference.generate import generate_ids
from sst.models.hf import lm_logits

INSTALL = "pip install lm-eval (lm-evaluation-harness), with the tasks' data available offline"


def require_lm_eval():
    return require_package("lm_eval", "lm_eval.api.model",
                           message=f"--lm-eval needs the `lm_eval` package, which is not installed: {INSTALL}")


@torch.no_grad()
def continuation_logprob(model: nn.Module, context: list[int], continuation: list[int],
                         max_len: int) -> tuple[float, bool]:
    """(sum of log p(continuation tokens | what precedes them), whether each is the argmax)."""
    ids = (context + continuation)[-(max_len + 1):]
    inputs = torch.tensor([ids[:-1]], device=next(model.parameters()).device)
    logprobs = torch.log_softmax(lm_logits(model, inputs)[0].float(), dim=-1)[-len(continuation):]
    target = torch.tensor(continuation, device=logprobs.device)
    picked = logprobs.gather(1, target[:, None])[:, 0]
    return float(picked.sum()), bool((logprobs.argmax(-1) == target).all())


def make_harness_lm(model: nn.Module, tokenizer, eot_id: int, max_len: int):
    """An ``lm_eval.api.model.LM`` answering the harness's requests with ``model`` (eval mode)."""
    base = require_lm_eval().api.model.LM

    class HarnessLM(base):
        def __init__(self):
            super().__init__()
            self.model, self.tokenizer, self.eot_id, self.max_len = model.eval(), tokenizer, eot_id, max_len

        def encode(self, text: str) -> list[int]:
            return self.tokenizer.encode(text).ids if text else []

        def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            # The harness's convention: trailing spaces of the context belong to the continuation.
            spaces = len(context) - len(context.rstrip(" "))
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            return self.encode(context) or [self.eot_id], self.encode(continuation)

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            out = []
            for request in requests:
                context, continuation = self._split(*request.args[:2])
                out.append(continuation_logprob(self.model, context, continuation, self.max_len))
            return out

        def loglikelihood_rolling(self, requests) -> list[float]:
            out = []
            for request in requests:
                ids = self.encode(request.args[0])
                total = 0.0
                for start in range(0, len(ids), self.max_len):  # disjoint windows, each with its past
                    window = ids[start:start + self.max_len]
                    past = ids[max(0, start - self.max_len):start] or [self.eot_id]
                    total += continuation_logprob(self.model, past, window, self.max_len)[0]
                out.append(total)
            return out

        def generate_until(self, requests) -> list[str]:
            out = []
            for request in requests:
                context, options = request.args[0], dict(request.args[1] if len(request.args) > 1 else {})
                until = options.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                new = generate_ids(self.model, self.encode(context) or [self.eot_id],
                                   int(options.get("max_gen_toks", 64)), max_context=self.max_len,
                                   stop_id=self.eot_id)
                text = self.tokenizer.decode([t for t in new if t != self.eot_id])
                for stop in until:
                    text = text.split(stop)[0]
                out.append(text)
            return out

    return HarnessLM()


def evaluate_lm_tasks(run, tasks: list[str], limit: int | None = None) -> dict:
    """Run lm-evaluation-harness ``tasks`` on a LoadedRun (LM task) -> the harness's results dict."""
    lm_eval = require_lm_eval()
    from sst.data.tokenizer import EOT

    tokenizer = getattr(getattr(run.task, "data", None), "tokenizer", None)
    if tokenizer is None:
        raise UsageError(f"--lm-eval: the {run.config.task.name} task has no tokenizer; it needs a language-model run")
    if not tasks:
        raise UsageError("--lm-eval: name at least one task, e.g. --lm-eval hellaswag,arc_easy")
    adapter = make_harness_lm(run.model, tokenizer, tokenizer.token_to_id(EOT), int(run.config.task.seq_len))
    results = lm_eval.simple_evaluate(model=adapter, tasks=list(tasks), limit=limit)
    return dict(results.get("results", {})) if isinstance(results, dict) else {}
