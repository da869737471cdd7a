"""Train the bundled sample checkpoint: a small character-level transformer LM.

The sample must be a real trained model (weight statistics are what compression depends on)
and small enough to ship inside the package. It is trained here on the Python standard
library's own source files, on the CPU, in about a minute:

    pip install torch==2.13.0 safetensors
    python scripts/train_sample.py src/zipmodel/data/sample.safetensors

Stored like most published checkpoints: matrices and embeddings in BF16, LayerNorm
parameters in F32, plus an I64 ``position_ids`` buffer as BERT-style models carry.
"""

from __future__ import annotations

import argparse
import math
import sysconfig
from pathlib import Path

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab=128, d=128, layers=2, heads=4, ctx=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("position_ids", torch.arange(ctx).unsqueeze(0))

    def forward(self, idx):
        t = idx.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf")), 1)
        x = self.tok(idx) + self.pos(self.position_ids[:, :t])
        for b in self.blocks:
            x = b(x, mask)
        return self.head(self.ln_f(x))


def corpus(limit: int = 4_000_000) -> torch.Tensor:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    data = bytearray()
    for f in sorted(stdlib.glob("*.py")):
        data += bytes(b for b in f.read_bytes() if b < 128)
        if len(data) >= limit:
            break
    return torch.tensor(list(data[:limit]), dtype=torch.long)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=600)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = corpus()
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    ctx, batch = 64, 32
    for step in range(args.steps):
        lr = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(0, len(data) - ctx - 1, (batch,))
        x = torch.stack([data[i : i + ctx] for i in ix])
        y = torch.stack([data[i + 1 : i + ctx + 1] for i in ix])
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 128), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.state_dict().items():
        if v.dtype == torch.long:
            tensors[k] = v.contiguous()
        elif ".ln" in k or k.startswith("ln_"):
            tensors[k] = v.float().contiguous()
        else:
            tensors[k] = v.to(torch.bfloat16).contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors,
        str(args.out),
        metadata={"format": "pt", "trained_by": "zipmodel scripts/train_sample.py"},
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
