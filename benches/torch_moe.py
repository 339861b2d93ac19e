#!/usr/bin/env python3
"""The MoE layer of benches/moe.rs in PyTorch eager, for comparison (torch is not a dependency).

The usual eager implementation (as in fairseq / Hugging Face Switch): router linear, softmax,
top-k, then a loop over experts gathering their tokens, running the expert FFN and scattering the
weighted result back with index_add_. Shapes: d = 512, 8 experts, T = 4096 tokens, f32, 2 threads.
`--tsv` prints `case<TAB>fwd_ms<TAB>fwd_bwd_ms` lines for the Rust benchmark to merge.
"""
import statistics
import sys
import time

import torch

D, TOKENS, REPS = 512, 4096, 5


class Moe(torch.nn.Module):
    def __init__(self, widths, k):
        super().__init__()
        self.k = k
        self.router = torch.nn.Linear(D, len(widths))
        torch.nn.init.normal_(self.router.weight, std=0.01)
        self.fc1 = torch.nn.ModuleList(torch.nn.Linear(D, h) for h in widths)
        self.fc2 = torch.nn.ModuleList(torch.nn.Linear(h, D) for h in widths)

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=-1)
        gates, idx = probs.topk(self.k, dim=-1)
        y = torch.zeros_like(x)
        flat_idx = idx.reshape(-1)
        flat_gates = gates.reshape(-1)
        token_of = torch.arange(x.shape[0]).repeat_interleave(self.k)
        for e in range(len(self.fc1)):
            sel = (flat_idx == e).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            tok = token_of[sel]
            h = self.fc2[e](torch.relu(self.fc1[e](x[tok])))
            y.index_add_(0, tok, h * flat_gates[sel, None])
        return y


def timed(f):
    f()
    ts = []
    for _ in range(REPS):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cases = [("homogeneous 2048", [2048] * 8), ("heterogeneous", [3072, 3072, 2048, 2048, 1024, 1024, 512, 512])]
    x = torch.randn(TOKENS, D)
    rows = []
    for name, widths in cases:
        for k in (1, 2):
            m = Moe(widths, k)

            def fwd():
                with torch.no_grad():
                    m(x)

            def fwd_bwd():
                xi = x.clone().requires_grad_(True)
                m(xi).sum().backward()

            rows.append((f"{name} top-{k}", timed(fwd), timed(fwd_bwd)))
    if "--tsv" in sys.argv:
        for r in rows:
            print(f"{r[0]}\t{r[1]:.3f}\t{r[2]:.3f}")
    else:
        print(f"PyTorch {torch.__version__} eager, {torch.get_num_threads()} threads")
        for r in rows:
            print(f"{r[0]:<24} fwd {r[1]:8.1f} ms   fwd+bwd {r[2]:8.1f} ms")


if __name__ == "__main__":
    main()
