"""Make real fine-tune pairs of the corpus's MiniLM for the delta (``--base``) benchmark.

Fine-tunes sentence-transformers all-MiniLM-L6-v2 (a BERT encoder) on a small paraphrase
task whose sentence pairs are generated here, deterministically, from templates: label 1 when
the second sentence says the same thing in other words (synonyms, passive voice), 0 when a
subject, object or verb changed. A linear head on the pooled [CLS] output classifies the pair.

Two fine-tunes of the same base, each saved fp32 and as a bf16 copy (round to nearest even):

* ``full``: every parameter trained (AdamW, lr 3e-5, no weight decay as in HF's Trainer
  default, so word-embedding rows of tokens the task never uses stay bit-identical);
* ``head``: only the last encoder layer, the pooler and the head trained, the rest frozen
  (the "unchanged tensors must cost almost nothing" case).

Both fine-tunes carry the two head tensors (``classifier.weight``/``.bias``) the base lacks,
as a ``BertForSequenceClassification`` export would. Outputs (never committed)::

    ~/.cache/zipmodel-corpus/finetune/base_{fp32,bf16}.safetensors
    ~/.cache/zipmodel-corpus/finetune/{full,head}_{fp32,bf16}.safetensors
    ~/.cache/zipmodel-corpus/finetune/manifest.json   (steps, loss, accuracy, SHA-256s)

Run (torch CPU and transformers installed; 6.5 minutes measured on 2 shared, busy cores)::

    python scripts/make_finetune.py [--steps 300] [--out DIR]

Fixed seeds, deterministic algorithms and a fixed thread count make the outputs repeat on
the same machine and torch version (float sums may differ on other CPUs or thread counts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

CORPUS = Path.home() / ".cache" / "zipmodel-corpus"

SUBJECTS = [
    ("the cat", "the kitten"),
    ("my brother", "my sibling"),
    ("the teacher", "the instructor"),
    ("a doctor", "a physician"),
    ("the old man", "the elderly man"),
    ("the company", "the firm"),
    ("our neighbour", "the person next door"),
    ("the child", "the kid"),
    ("the pilot", "the aviator"),
    ("the chef", "the cook"),
    ("the student", "the pupil"),
    ("a farmer", "a grower"),
]
VERBS = [  # (active past, synonym active past, passive participle of the synonym)
    ("bought", "purchased", "purchased"),
    ("fixed", "repaired", "repaired"),
    ("painted", "coloured", "coloured"),
    ("found", "discovered", "discovered"),
    ("cleaned", "washed", "washed"),
    ("built", "constructed", "constructed"),
    ("sold", "traded away", "traded away"),
    ("moved", "relocated", "relocated"),
    ("chose", "picked", "picked"),
    ("wrote", "authored", "authored"),
]
OBJECTS = [
    ("the car", "the automobile"),
    ("a small house", "a little home"),
    ("the big table", "the large table"),
    ("an old bicycle", "an aged bike"),
    ("the red door", "the crimson door"),
    ("a short letter", "a brief note"),
    ("the kitchen", "the cooking area"),
    ("a new phone", "a brand-new mobile"),
    ("the garden fence", "the yard fence"),
    ("a wooden boat", "a timber boat"),
]
WHEN = ["yesterday", "last week", "this morning", "in the spring", "after lunch", "on monday"]


def make_pairs(n: int, seed: int) -> list[tuple[str, str, int]]:
    """``n`` labelled sentence pairs, half paraphrases; the same for the same seed."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        s, v, o, w = (rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS, WHEN))
        a = f"{s[0]} {v[0]} {o[0]} {w}."
        if i % 2 == 0:  # paraphrase: synonyms, and half the time the passive voice
            if rng.random() < 0.5:
                b = f"{o[1]} was {v[2]} by {s[1]} {w}."
            else:
                b = f"{w}, {s[1]} {v[1]} {o[1]}."
            label = 1
        else:  # change one fact, keep the words close
            kind = rng.randrange(3)
            if kind == 0:
                s2 = rng.choice([x for x in SUBJECTS if x != s])
                b = f"{s2[1]} {v[1]} {o[1]} {w}."
            elif kind == 1:
                o2 = rng.choice([x for x in OBJECTS if x != o])
                b = f"{o2[1]} was {v[2]} by {s[1]} {w}."
            else:
                v2 = rng.choice([x for x in VERBS if x != v])
                b = f"{w}, {s[1]} {v2[1]} {o[1]}."
            label = 0
        pairs.append((a.capitalize(), b.capitalize(), label))
    return pairs


def save(state: dict, path: Path, dtype) -> str:
    """Save ``state`` (name -> tensor) as safetensors in ``dtype`` (floats only); SHA-256."""
    from safetensors.torch import save_file

    out = {k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(model_dir: Path, pairs, *, steps: int, trainable: str, seed: int, log) -> dict:
    """Fine-tune a fresh copy of the base; return its state dict plus the head and stats."""
    import torch
    from torch import nn
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    bert = BertModel.from_pretrained(model_dir)
    head = nn.Linear(bert.config.hidden_size, 2)
    if trainable == "head":
        for name, p in bert.named_parameters():
            p.requires_grad = name.startswith(("encoder.layer.5.", "pooler."))
    params = [p for p in bert.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-5 if trainable == "full" else 1e-4, weight_decay=0.0)
    rng = random.Random(seed)
    batch = 16
    train_set, test_set = pairs[: len(pairs) * 4 // 5], pairs[len(pairs) * 4 // 5 :]
    bert.train()
    t0 = time.perf_counter()
    losses = []
    for step in range(steps):
        items = [train_set[rng.randrange(len(train_set))] for _ in range(batch)]
        enc = tok(
            [a for a, _, _ in items],
            [b for _, b, _ in items],
            padding=True,
            truncation=True,
            max_length=48,
            return_tensors="pt",
        )
        labels = torch.tensor([y for _, _, y in items])
        logits = head(bert(**enc).pooler_output)
        loss = nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"  {trainable} step {step + 1}/{steps} loss {sum(losses[-50:]) / 50:.4f}")
    bert.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test_set), 64):
            items = test_set[i : i + 64]
            enc = tok(
                [a for a, _, _ in items],
                [b for _, b, _ in items],
                padding=True,
                truncation=True,
                max_length=48,
                return_tensors="pt",
            )
            pred = head(bert(**enc).pooler_output).argmax(-1)
            correct += int((pred == torch.tensor([y for _, _, y in items])).sum())
    state = {k: v.detach().clone() for k, v in bert.state_dict().items()}
    state["classifier.weight"] = head.weight.detach().clone()
    state["classifier.bias"] = head.bias.detach().clone()
    return {
        "state": state,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(sum(losses[-50:]) / min(50, len(losses)), 4),
        "test_accuracy": round(correct / len(test_set), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=CORPUS / "minilm", help="base model folder")
    ap.add_argument("--out", type=Path, default=CORPUS / "finetune", help="output folder")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per fine-tune")
    ap.add_argument("--pairs", type=int, default=640, help="generated sentence pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (fixed: sums repeat)")
    args = ap.parse_args()

    import torch
    from transformers import BertModel

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = make_pairs(args.pairs, args.seed)
    manifest: dict = {
        "model": str(args.model),
        "steps": args.steps,
        "pairs": len(pairs),
        "seed": args.seed,
        "torch": torch.__version__,
        "files": {},
    }

    def log(msg: str) -> None:
        print(msg, flush=True)

    base = {
        k: v.detach().clone() for k, v in BertModel.from_pretrained(args.model).state_dict().items()
    }
    for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        name = f"base_{kind}.safetensors"
        manifest["files"][name] = save(base, args.out / name, dtype)
        log(f"wrote {args.out / name}")
    for trainable in ("full", "head"):
        log(f"fine-tune '{trainable}': {args.steps} steps")
        res = train(
            args.model, pairs, steps=args.steps, trainable=trainable, seed=args.seed, log=log
        )
        changed = sum(
            1 for k, v in res["state"].items() if k in base and not torch.equal(v, base[k])
        )
        manifest[trainable] = {
            "seconds": res["seconds"],
            "final_loss": res["final_loss"],
            "test_accuracy": res["test_accuracy"],
            "tensors": len(res["state"]),
            "changed_fp32": changed,
            "new": sorted(k for k in res["state"] if k not in base),
        }
        log(f"  {trainable}: accuracy {res['test_accuracy']}, {changed} base tensors changed")
        for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            name = f"{trainable}_{kind}.safetensors"
            manifest["files"][name] = save(res["state"], args.out / name, dtype)
            log(f"wrote {args.out / name}")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {args.out / 'manifest.json'}")


if __name__ == "__main__":
    main()
