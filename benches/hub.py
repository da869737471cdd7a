"""Push and pull a model folder through the loopback Hub (tests/hubserver.py): bytes and times.

    python benches/hub.py [FOLDER] [--threads N] [--check-model]

FOLDER defaults to ~/.cache/zipmodel-corpus/minilm. Prints the bytes uploaded against the
uncompressed folder, the time of the push, of a cold pull (empty Hugging Face cache and restore
folder) and of a warm pull (same revision again), the requests a warm pull makes, and, as a
reference, the same folder uploaded and downloaded uncompressed with huggingface_hub alone.
With --check-model, the pulled folder is loaded with transformers AutoModel and its outputs on a
few sentences compared with the original's. Loopback moves bytes at memory speed, so the times
are the floor of what a network adds to; bytes are what a network would carry.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hubserver import HubServer  # noqa: E402


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def check_model(src: Path, out: Path) -> str:
    import torch
    from transformers import AutoModel, AutoTokenizer

    sentences = ["zipmodel restores every byte.", "A cat sat on the mat.", "Hub round trip"]
    batch = AutoTokenizer.from_pretrained(src)(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = AutoModel.from_pretrained(src)(**batch).last_hidden_state
        b = AutoModel.from_pretrained(out)(**batch).last_hidden_state
    same = torch.equal(a, b)
    return f"AutoModel outputs on {len(sentences)} sentences: {'identical' if same else 'DIFFER'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=Path.home() / ".cache/zipmodel-corpus/minilm")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--check-model", action="store_true")
    args = ap.parse_args()
    src = Path(args.folder)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import huggingface_hub

    from zipmodel import hub

    original = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    with HubServer() as srv, tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        os.environ["ZIPMODEL_HUB_CACHE"] = str(t / "restored")
        kw = {"endpoint": srv.url, "token": "hf_write"}
        t0 = time.perf_counter()
        pushed = hub.upload("alice/model", src, threads=args.threads, **kw)
        push_s = time.perf_counter() - t0
        sent = sum(r.received for r in srv.log if "/commit/" in r.path)
        stored = sum(len(b) for b in srv.files("alice/model").values())

        n0 = len(srv.log)
        t0 = time.perf_counter()
        cold = hub.pull("alice/model", cache_dir=t / "hf", threads=args.threads, **kw)
        cold_s = time.perf_counter() - t0
        cold_got = sum(r.sent for r in srv.log[n0:])
        n1 = len(srv.log)
        t0 = time.perf_counter()
        warm = hub.pull("alice/model", cache_dir=t / "hf", threads=args.threads, **kw)
        warm_s = time.perf_counter() - t0
        warm_reqs = [f"{r.method} {r.path}" for r in srv.log[n1:]]
        assert warm.reused and warm.path == cold.path
        identical = tree(cold.path) == tree(src)

        # reference: the same folder through huggingface_hub alone, uncompressed
        api = huggingface_hub.HfApi(**kw)
        api.create_repo("alice/plain")
        t0 = time.perf_counter()
        api.upload_folder(repo_id="alice/plain", folder_path=src)
        plain_push_s = time.perf_counter() - t0
        plain_stored = sum(len(b) for b in srv.files("alice/plain").values())
        t0 = time.perf_counter()
        huggingface_hub.snapshot_download("alice/plain", cache_dir=t / "hf2", **kw)
        plain_pull_s = time.perf_counter() - t0

        mb = 1e6
        print(f"folder: {src}  ({len(pushed.folder.files)} files, {original / mb:.2f} MB)")
        print(
            f"uploaded: {pushed.uploaded_bytes / mb:.2f} MB in {pushed.uploaded_files} files "
            f"({100 * pushed.uploaded_bytes / original:.2f}% of the folder); repo holds "
            f"{stored / mb:.2f} MB; commit requests carried {sent / mb:.2f} MB (base64)"
        )
        print(f"push (compress + upload): {push_s:.2f} s")
        print(
            f"cold pull: {cold_s:.2f} s  (download {cold.download_seconds:.2f} s of "
            f"{cold_got / mb:.2f} MB, restore {cold.restore_seconds:.2f} s)  identical bytes: "
            f"{identical}"
        )
        print(f"warm pull: {warm_s:.3f} s  requests: {warm_reqs}")
        print(
            f"reference, uncompressed with huggingface_hub alone: repo {plain_stored / mb:.2f} MB, "
            f"upload {plain_push_s:.2f} s, cold snapshot_download {plain_pull_s:.2f} s"
        )
        if args.check_model:
            print(check_model(src, cold.path))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
