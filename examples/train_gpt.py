"""Train a small GPT on a text file shipped with the repo, with flashtile and with
torch SDPA, and compare tokens/s, peak memory and the loss curve.

    python examples/train_gpt.py                 # tiny config, CPU or GPU, ~1 minute
    python examples/train_gpt.py --size gpt2     # 124M-parameter-class config, for a GPU

Switching a model to flashtile is the one line in `Attention.forward`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

import flashtile

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "arithmetic.txt")


@dataclass
class Config:
    n_layer: int
    n_head: int
    n_embd: int
    block: int
    batch: int
    steps: int
    lr: float


SIZES = {
    "tiny": Config(n_layer=2, n_head=4, n_embd=128, block=128, batch=16, steps=120, lr=3e-3),
    "gpt2": Config(n_layer=12, n_head=12, n_embd=768, block=1024, batch=16, steps=60, lr=6e-4),
}


class Attention(nn.Module):
    def __init__(self, cfg: Config, impl: str):
        super().__init__()
        self.n_head, self.impl = cfg.n_head, impl
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)  # (B, T, H, D)
        if self.impl == "flashtile":
            y = flashtile.flash_attn_func(q, k, v, causal=True)
        else:  # torch SDPA wants (B, H, T, D)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=True).transpose(1, 2)
        return self.proj(y.reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: Config, impl: str):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = Attention(cfg, impl)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: Config, impl: str, vocab: int = 256):
        super().__init__()
        self.tok = nn.Embedding(vocab, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, impl) for _ in range(cfg.n_layer))
        self.ln = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def batches(data: torch.Tensor, cfg: Config, device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(data) - cfg.block - 1, (cfg.batch,), generator=gen)
        x = torch.stack([data[s: s + cfg.block] for s in starts])
        y = torch.stack([data[s + 1: s + cfg.block + 1] for s in starts])
        yield x.to(device), y.to(device)


def train(impl: str, cfg: Config, data: torch.Tensor, device, dtype) -> dict:
    torch.manual_seed(0)
    model = GPT(cfg, impl).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    stream = batches(data, cfg, device, seed=1)
    losses, timed_tokens, timed_seconds = [], 0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(1, cfg.steps + 1):
        x, y = next(stream)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step > 3:  # leave compilation and warm-up out of the throughput
            timed_tokens += x.numel()
            timed_seconds += time.perf_counter() - t0
        losses.append(loss.item())
        bar = "#" * (30 * step // cfg.steps)
        print(f"\r  {impl:9s} [{bar:30s}] step {step}/{cfg.steps} loss {loss.item():.3f}",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    return dict(impl=impl, tokens_per_s=timed_tokens / max(timed_seconds, 1e-9),
                peak_bytes=peak, first_loss=losses[0],
                last_loss=sum(losses[-10:]) / len(losses[-10:]), losses=losses)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--impl", choices=["flashtile", "sdpa", "both"], default="both")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    cfg = replace(SIZES[args.size], steps=args.steps or SIZES[args.size].steps)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with open(DATA, "rb") as f:
        data = torch.tensor(list(f.read()), dtype=torch.long)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"GPT {args.size}: {cfg.n_layer} layers, {cfg.n_head} heads, d_model {cfg.n_embd}, "
          f"context {cfg.block}, batch {cfg.batch}, {cfg.steps} steps on {name} ({dtype})")
    impls = ["flashtile", "sdpa"] if args.impl == "both" else [args.impl]
    results = [train(impl, cfg, data, device, dtype) for impl in impls]
    for r in results:
        peak = f"{r['peak_bytes'] / 2**20:8.0f} MiB" if r["peak_bytes"] else "     n/a"
        print(f"{r['impl']:9s} {r['tokens_per_s']:10.0f} tokens/s  peak {peak}  "
              f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=name, size=args.size, config=cfg.__dict__, results=results), f)
    return results


if __name__ == "__main__":
    main()
