#!/usr/bin/env python3
"""PyTorch fp32 CPU peer baseline for gsq's bench/model_bench.

Measures the wall time of ONE LoRA fine-tuning step (zero_grad, forward, mean
cross-entropy, backward, AdamW step) of a llama2.c-architecture model: token
embedding; n_layers x [RMSNorm -> q,k,v (no bias) -> interleaved-pair RoPE ->
causal grouped-query attention -> o -> residual; RMSNorm -> SwiGLU
w2(silu(w1 x) * w3 x) -> residual]; final RMSNorm; classifier (tied to the
embedding with --tied 1). Base weights are frozen (normal std 0.02, norm
weights 1); LoRA adapters (A: r x in, B: out x r, scale alpha/r) on q,k,v,o,
w1,w2,w3 are the only trainable parameters.

bench/model_bench runs it as a subprocess with the same model shape, e.g.
  /usr/bin/python3 bench/torch_baseline.py --dim 288 --hidden 768 --layers 6 \
      --heads 6 --kv-heads 6 --vocab 32000 --seq 256 --threads 1 --steps 3
and parses the single JSON line on stdout:
  {"ms_per_step", "runs_ms", "peak_rss_mb", "loss", "params", "torch"}
Everything else (warnings) goes to stderr.
"""
import argparse, json, math, resource, statistics, sys, time
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
for name in ("dim", "hidden", "layers", "heads", "kv-heads", "vocab", "seq"):
    p.add_argument("--" + name, type=int, required=True)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--head-dim", type=int, default=None, help="default dim/heads")
p.add_argument("--rope-theta", type=float, default=10000.0)
p.add_argument("--eps", type=float, default=1e-5)
p.add_argument("--tied", type=int, choices=(0, 1), default=1)
p.add_argument("--rank", type=int, default=8)
p.add_argument("--alpha", type=float, default=16.0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--steps", type=int, default=3, help="timed steps")
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--tokens", default=None, help="file of whitespace-separated ints")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
hd = a.head_dim or a.dim // a.heads
if a.steps < 1 or a.heads % a.kv_heads or hd % 2:
    p.error("need --steps >= 1, heads divisible by kv-heads, even head-dim")

torch.set_num_threads(a.threads)
torch.set_num_interop_threads(1)
g = torch.Generator().manual_seed(a.seed)


def frozen(*shape):  # base weight, built in place: no intermediate copies
    return torch.empty(*shape).normal_(0.0, 0.02, generator=g)


class LoRALinear:
    """y = x W^T + scale * (x A^T) B^T with W frozen, A and B trainable."""

    def __init__(self, n_in, n_out):
        self.w = frozen(n_out, n_in)
        bound = 1.0 / math.sqrt(n_in)  # kaiming_uniform(a=sqrt(5)) bound
        self.A = torch.empty(a.rank, n_in).uniform_(-bound, bound, generator=g).requires_grad_()
        self.B = torch.empty(n_out, a.rank).normal_(0.0, 1e-3, generator=g).requires_grad_()

    def __call__(self, x):
        return F.linear(x, self.w) + (a.alpha / a.rank) * F.linear(F.linear(x, self.A), self.B)


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + a.eps) * w


# ---- model (built layer by layer) ----
emb = frozen(a.vocab, a.dim)
cls = emb if a.tied else frozen(a.vocab, a.dim)
layers = []
for _ in range(a.layers):
    layers.append(dict(
        an=torch.ones(a.dim), fn=torch.ones(a.dim),
        q=LoRALinear(a.dim, a.heads * hd), k=LoRALinear(a.dim, a.kv_heads * hd),
        v=LoRALinear(a.dim, a.kv_heads * hd), o=LoRALinear(a.heads * hd, a.dim),
        w1=LoRALinear(a.dim, a.hidden), w2=LoRALinear(a.hidden, a.dim),
        w3=LoRALinear(a.dim, a.hidden)))
final_norm = torch.ones(a.dim)
lin_names = ("q", "k", "v", "o", "w1", "w2", "w3")
adapters = [t for L in layers for n in lin_names for t in (L[n].A, L[n].B)]
params = emb.numel() + (0 if a.tied else cls.numel()) + final_norm.numel() + sum(
    L["an"].numel() + L["fn"].numel() + sum(L[n].w.numel() for n in lin_names) for L in layers)

# RoPE tables, Meta interleaved layout: pair (2i, 2i+1) rotated by pos * theta^(-2i/hd)
freqs = a.rope_theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
ang = torch.outer(torch.arange(a.seq, dtype=torch.float32), freqs)  # (T, hd/2)
cos, sin = ang.cos(), ang.sin()
mask = torch.full((a.seq, a.seq), float("-inf")).triu(1)  # causal


def rope(x):  # x: (B, H, T, hd)
    xr = x.reshape(*x.shape[:-1], hd // 2, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(-2)


def forward_loss(tok):  # tok: (B, T+1) int64
    inp, tgt = tok[:, :-1], tok[:, 1:]
    B, T = inp.shape
    x = emb[inp]
    rep = a.heads // a.kv_heads
    for L in layers:
        h = rmsnorm(x, L["an"])
        q = rope(L["q"](h).view(B, T, a.heads, hd).transpose(1, 2))
        k = rope(L["k"](h).view(B, T, a.kv_heads, hd).transpose(1, 2))
        v = L["v"](h).view(B, T, a.kv_heads, hd).transpose(1, 2)
        if rep > 1:  # grouped-query: each kv head serves `rep` consecutive query heads
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1)
        x = x + L["o"]((att @ v).transpose(1, 2).reshape(B, T, a.heads * hd))
        h = rmsnorm(x, L["fn"])
        x = x + L["w2"](F.silu(L["w1"](h)) * L["w3"](h))
    logits = F.linear(rmsnorm(x, final_norm), cls)
    return F.cross_entropy(logits.reshape(-1, a.vocab), tgt.reshape(-1))


# ---- input tokens ----
n_tok = a.batch * (a.seq + 1)
if a.tokens:
    with open(a.tokens) as f:
        vals = [int(s) for s in f.read().split()]
    if len(vals) < n_tok:
        sys.exit(f"--tokens: need {n_tok} ints, got {len(vals)}")
    tok = torch.tensor(vals[:n_tok], dtype=torch.int64)
else:
    tok = torch.randint(0, a.vocab, (n_tok,), generator=g)
tok = tok.view(a.batch, a.seq + 1)

# ---- timed training steps ----
opt = torch.optim.AdamW(adapters, lr=1e-4)
runs = []
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = forward_loss(tok)
    loss.backward()
    opt.step()
    dt = (time.perf_counter() - t0) * 1e3
    if i >= a.warmup:
        runs.append(dt)

print(json.dumps({
    "ms_per_step": statistics.median(runs),
    "runs_ms": [round(r, 3) for r in runs],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "loss": loss.item(),
    "params": params,
    "torch": torch.__version__,
}))
