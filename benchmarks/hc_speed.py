"""Speed of a hyper-connection site against the form it replaced (session 22), alone and inside LoopCTR training
and evaluation. Now: the stream mixes as one batched product and the RMS norm of the dynamic coefficients applied
after their projection; before: every mix as n broadcast products and n - 1 sums, the normalised streams formed.

    python benchmarks/hc_speed.py [--tokens 13000] [--data PREPARED_DATASET] [--steps 8] [--threads 1]

Part 1 times one mHC site (4 streams, d 64) on `--tokens` tokens (13,000: a batch of 1,024 Amazon samples),
forward + backward and inference. Part 2 (with `--data`) times LoopCTR(1/3) training steps (batch 1024, Adam)
and depth-1 evaluation on the first batches of the dataset's train split, with the site's forward switched
between the two forms. Every case runs in this one process, interleaved, best of `--repeats` rounds, so their
ratios are comparable on a shared machine.
"""

from __future__ import annotations

import argparse

import torch
from depth_speed import best_of  # the interleaved best-of-rounds timer

from loopctr.layers.hyper_connections import HyperConnection, select_tokens
from loopctr.layers.transformer import rms_norm


def previous_dynamic_logits(self, flat):
    return rms_norm(flat, eps=self.eps) @ self.phi


def previous_forward(self, x, branch, query=None):
    def mix(weights, streams):
        out = weights[..., 0:1] * streams[..., 0:1, :]
        for j in range(1, streams.shape[-2]):
            out = out + weights[..., j:j + 1] * streams[..., j:j + 1, :]
        return out

    pre, post, res = self.coefficients(x)
    y = branch(mix(pre.unsqueeze(-2), x).squeeze(-2))
    if query is not None:
        x, post, res = select_tokens(x, query), select_tokens(post, query), select_tokens(res, query)
    return mix(res, x) + post.unsqueeze(-1) * y.unsqueeze(-2)


FORMS = {"now": {"forward": HyperConnection.forward, "dynamic_logits": HyperConnection.dynamic_logits},
         "before": {"forward": previous_forward, "dynamic_logits": previous_dynamic_logits}}


def with_form(form: str, run):
    def call():
        for name, method in FORMS[form].items():
            setattr(HyperConnection, name, method)
        try:
            return run()
        finally:
            for name, method in FORMS["now"].items():
                setattr(HyperConnection, name, method)
    return call


def site_cases(tokens: int) -> dict:
    torch.manual_seed(0)
    site = HyperConnection(64, 4, "mhc")
    branch = torch.nn.Linear(64, 64)
    x = torch.randn(tokens, 4, 64, requires_grad=True)
    grad = torch.randn(tokens, 4, 64)

    def train():
        site(x, branch).backward(grad)

    @torch.inference_mode()
    def infer():
        site(x, branch)

    return {f"{form}, {kind}": with_form(form, run) for kind, run in (("forward + backward", train),
                                                                     ("inference", infer)) for form in FORMS}


def loopctr_cases(data_dir: str, steps: int) -> tuple[dict, int]:
    from loopctr.data.dataset import PreparedDataset
    from loopctr.data.loader import BatchLoader
    from loopctr.models import build_model
    from loopctr.train.config import build_run_config
    from loopctr.train.trainer import build_optimizer

    data = PreparedDataset(data_dir)
    run = build_run_config("loopctr", overrides=["max_len=50", "train_loops=3"])
    torch.manual_seed(0)
    model = build_model("loopctr", data.schema, data.vocab_sizes, run.model, data.pretrained_vectors())
    optimizer = build_optimizer(model, run.train)
    batches = []
    for batch in BatchLoader(data.split("train"), 1024, run.data).batches():
        batches.append(batch)
        if len(batches) == steps:
            break

    def train():
        model.train()
        for batch in batches:
            loss, _ = model.loss(model(batch), batch.label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    @torch.inference_mode()
    def evaluate():
        model.eval()
        for batch in batches:
            model(batch)

    rows = sum(b.size for b in batches)
    return {f"{form}, LoopCTR(1/3) {kind}": with_form(form, run) for kind, run in (("training", train),
                                                                                   ("evaluation", evaluate))
            for form in FORMS}, rows


def rows_with_speedup(best: dict):
    """(name, seconds, "before / now" for the rows of the new form, "-" for the others)."""
    for name, seconds in best.items():
        speedup = f"{best[name.replace('now', 'before', 1)] / seconds:.2f}x" if name.startswith("now") else "-"
        yield name, seconds, speedup


def main():
    from loopctr.runtime import keep_freed_memory

    keep_freed_memory()  # as the loopctr command does (LOOPCTR_MALLOC=default: off)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=13000)
    p.add_argument("--data", help="a prepared dataset for part 2 (LoopCTR training and evaluation)")
    p.add_argument("--steps", type=int, default=8, help="batches of 1,024 per timed round in part 2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| case | ms per call ({args.tokens:,} tokens, {args.threads} thread(s)) | speed-up |\n|---|---|---|")
    for name, seconds, speedup in rows_with_speedup(best_of(site_cases(args.tokens), args.repeats)):
        print(f"| {name} | {seconds * 1e3:.1f} | {speedup} |", flush=True)
    if args.data:
        cases, rows = loopctr_cases(args.data, args.steps)
        print(f"\n| case | samples/s ({rows:,} rows, {args.threads} thread(s)) | speed-up |\n|---|---|---|")
        for name, seconds, speedup in rows_with_speedup(best_of(cases, args.repeats)):
            print(f"| {name} | {rows / seconds:,.0f} | {speedup} |", flush=True)


if __name__ == "__main__":
    main()
