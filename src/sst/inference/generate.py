"""Text generation from a causal LM checkpoint: greedy or top-k sampling, one token at a time.

p(next) = softmax(logits / temperature) restricted to the ``top_k`` most likely tokens; top_k = 1
or temperature = 0 is greedy decoding. The context is cropped to the model's trained length.
"""

from __future__ import annotations

import torch
from torch import nn

from sst.errors import UsageError
from sst.inference.loading import LoadedRun
from sst.models.hf import lm_logits
from sst.models.modes import eval_mode


def next_token(logits: torch.Tensor, top_k: int = 1, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> int:
    """Pick a token id from ``logits`` (V,): argmax when greedy, else a top-k sample."""
    if top_k < 0 or temperature < 0:
        raise UsageError(f"top_k and temperature must be >= 0, got top_k={top_k}, temperature={temperature}")
    if top_k == 1 or temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        values, indices = torch.topk(logits, top_k)
    else:
        values, indices = logits, torch.arange(logits.numel(), device=logits.device)
    probs = torch.softmax(values, dim=-1).cpu()
    return int(indices[int(torch.multinomial(probs, 1, generator=generator))])


@torch.no_grad()
def generate_ids(
    model: nn.Module, prompt_ids: list[int], max_new_tokens: int = 50, top_k: int = 1,
    temperature: float = 1.0, max_context: int = 0, stop_id: int | None = None, seed: int = 0,
) -> list[int]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` ids; -> only the new ids.

    Stops early after ``stop_id``. ``max_context`` > 0 keeps only the last tokens of the context
    (models with learned or bounded positions cannot see further back).
    """
    if not prompt_ids:
        raise UsageError("the prompt is empty: give at least one token")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    new: list[int] = []
    with eval_mode(model):
        for _ in range(max_new_tokens):
            context = ids[-max_context:] if max_context > 0 else ids
            logits = lm_logits(model, torch.tensor([context], device=device))[0, -1]
            token = next_token(logits, top_k, temperature, generator)
            ids.append(token)
            new.append(token)
            if token == stop_id:
                break
    return new


def generate_text(
    run: LoadedRun, prompt: str, max_new_tokens: int = 50, top_k: int = 1,
    temperature: float = 1.0, seed: int = 0,
) -> str:
    """The continuation of ``prompt`` by an LM run, decoded with the task's tokenizer.

    An empty prompt starts a new document (the end-of-text separator); generation stops at the next one.
    """
    from sst.data.tokenizer import EOT

    tokenizer = getattr(getattr(run.task, "data", None), "tokenizer", None)
    if tokenizer is None:
        raise UsageError(f"task {run.config.task.name!r} has no tokenizer: generation needs a language-model run")
    eot = tokenizer.token_to_id(EOT)
    prompt_ids = tokenizer.encode(prompt).ids if prompt else []
    if not prompt_ids:
        prompt_ids = [eot]
    max_context = int(getattr(run.config.task, "seq_len", 0))
    new = generate_ids(run.model, prompt_ids, max_new_tokens, top_k, temperature, max_context, eot, seed)
    if new and new[-1] == eot:
        new = new[:-1]
    return tokenizer.decode(new)
