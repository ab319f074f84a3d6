"""The copy task shared by the translation-model tests (imported by test modules)."""

import torch

PAD, BOS, EOS = 0, 1, 2


def copy_batch(generator: torch.Generator, batch: int = 64) -> dict[str, torch.Tensor]:
    """Random sentences of 2-6 symbols (ids 4-11): target = source. Tensors (batch, 7)."""
    lengths = torch.randint(2, 7, (batch,), generator=generator)
    src, tgt_in, tgt_out = (torch.full((batch, 7), PAD) for _ in range(3))
    for i, n in enumerate(lengths.tolist()):
        words = torch.randint(4, 12, (n,), generator=generator)
        src[i, :n], src[i, n] = words, EOS
        tgt_in[i, 0], tgt_in[i, 1 : n + 1] = BOS, words
        tgt_out[i, :n], tgt_out[i, n] = words, EOS
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}
