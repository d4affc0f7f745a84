"""
Reference GPT training script (the baseline candidate).

One file, read top to bottom: hyperparameters, model, optimizer, training loop, evaluation.
The harness fixes the data, the tokenizer, the time budget, the seed and the evaluation
(fixed/prepare.py); everything in this file is fair game for a candidate to change.

Model: a GPT with RMSNorm (no weights), rotary embeddings, QK-norm, ReLU^2 MLP, untied
token embedding and lm_head, a tanh logit soft-cap and zero-initialised output projections.
Optimizer: Muon for the 2-D block matrices, AdamW for the embedding and the lm_head.
Schedule: a function of elapsed training time, so every run uses the whole budget.

Runs on one CUDA GPU (torch.compile, bf16 autocast) or, slowly, on the CPU (float32, eager).
"""

import time

T_START = time.time()  # total_seconds counts from here (imports and startup included)

import gc
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import prepare
from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

# ---------------------------------------------------------------------------
# Hyperparameters
# The model size comes from the benchmark's hint; the defaults suit the tiny CPU benchmark.

HINT = dict(prepare.MODEL_HINT or {})
DEPTH = int(HINT.get("depth", 4))                    # transformer blocks
WIDTH = int(HINT.get("width", 128))                  # model dimension
HEAD_DIM = int(HINT.get("head_dim", 32))             # 128 suits flash attention on GPUs
DEVICE_BATCH_SIZE = int(HINT.get("device_batch_size", 16))   # rows per micro-batch
TOTAL_BATCH_TOKENS = int(HINT.get("total_batch_tokens", DEVICE_BATCH_SIZE * MAX_SEQ_LEN))
MLP_RATIO = 4
SOFTCAP = 15.0                                       # logits = cap * tanh(logits / cap)
ROPE_BASE = 10000.0

# Optimizer. AdamW LRs are scaled by (WIDTH / 768) ** -0.5: wider models need smaller steps.
MATRIX_LR = 0.04                                     # Muon, block matrices
EMBED_LR = 0.6                                       # AdamW, token embedding
HEAD_LR = 0.004                                      # AdamW, lm_head
ADAM_BETAS = (0.8, 0.95)                             # short memory: the runs are short
ADAM_EPS = 1e-10
MUON_MOMENTUM_START, MUON_MOMENTUM_END = 0.85, 0.95  # warmed up over the first steps
MUON_MOMENTUM_WARMUP_STEPS = 300
NS_STEPS = 5                                         # Newton-Schulz iterations

# Schedule, as fractions of the time budget: no warm-up, linear warm-down to zero over the end.
WARMUP_FRAC = 0.0
WARMDOWN_FRAC = 0.5
FINAL_LR_FRAC = 0.0

LOG_EVERY_S = 1.0                                    # a progress line about once a second
UNTIMED_STEPS_CUDA = 5                               # compile warm-up steps, not counted on CUDA

# ---------------------------------------------------------------------------
# Device and precision

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as prepare's dataloader
IS_CUDA = DEVICE.type == "cuda"
if IS_CUDA:
    torch.backends.cuda.matmul.allow_tf32 = True     # fp32 matmuls (optimizer, eval leftovers) on TF32
    torch.backends.cudnn.allow_tf32 = True
    AUTOCAST = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    NS_DTYPE = torch.bfloat16                        # Newton-Schulz tolerates bf16 and is faster in it
else:
    AUTOCAST = nullcontext()                         # CPU: plain float32
    NS_DTYPE = torch.float32

torch.manual_seed(prepare.SEED)                      # the harness chooses the seed


# ---------------------------------------------------------------------------
# Model


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int
    depth: int
    width: int
    head_dim: int
    mlp_ratio: int = MLP_RATIO
    softcap: float = SOFTCAP


def norm(x):
    # RMSNorm without learnable weights
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x, cos, sin):
    # x: (B, T, H, D); rotate the two halves of each head by position-dependent angles
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.width // cfg.head_dim
        self.head_dim = cfg.head_dim
        # separate q, k, v so that Muon orthogonalises each matrix on its own
        self.c_q = nn.Linear(cfg.width, cfg.width, bias=False)
        self.c_k = nn.Linear(cfg.width, cfg.width, bias=False)
        self.c_v = nn.Linear(cfg.width, cfg.width, bias=False)
        self.c_proj = nn.Linear(cfg.width, cfg.width, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        # QK-norm keeps attention logits bounded; rotary after it (a rotation keeps the norm)
        q = apply_rotary(norm(q), cos, sin)
        k = apply_rotary(norm(k), cos, sin)
        # under autocast the norm/rotary may come out in fp32: SDPA's fast kernels want bf16
        q, k = q.to(v.dtype), k.to(v.dtype)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width, bias=False)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.width % cfg.head_dim == 0, "width must be a multiple of head_dim"
        assert cfg.head_dim % 2 == 0, "rotary needs an even head_dim"
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.lm_head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)  # untied from wte
        cos, sin = self._rotary_tables(cfg.seq_len, cfg.head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _rotary_tables(seq_len, head_dim):
        inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, T, 1, D/2)

    @torch.no_grad()
    def init_weights(self):
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)       # normed right after lookup
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)  # near-uniform first predictions
        bound = math.sqrt(3.0) * self.cfg.width ** -0.5             # uniform with std 1/sqrt(width)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            # zero output projections: every block starts as the identity
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx, targets=None, reduction="mean"):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x)).float()       # the loss is computed in fp32
        logits = self.cfg.softcap * torch.tanh(logits / self.cfg.softcap)
        if targets is None:
            return logits
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction=reduction
        )
        return loss if reduction != "none" else loss.view_as(targets)  # per-token nats


# ---------------------------------------------------------------------------
# Optimizer: Muon for block matrices


def newton_schulz(G, steps):
    """Approximately replace G (a batch of matrices) by the nearest semi-orthogonal matrix,
    U V^T of its SVD, with a quintic Newton-Schulz iteration tuned to converge fast."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(NS_DTYPE)
    tall = X.size(-2) > X.size(-1)
    if tall:                                         # iterate on the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz: SGD with Nesterov momentum whose update is
    orthogonalised. Parameters of one shape are stacked so that each shape costs one batched
    Newton-Schulz call."""

    def __init__(self, params, lr, momentum, ns_steps=NS_STEPS):
        params = list(params)
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [dict(params=[p for p in params if tuple(p.shape) == s]) for s in shapes]
        super().__init__(groups, dict(lr=lr, momentum=momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = torch.stack([p.grad for p in params])
            state = self.state[params[0]]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grads)
            buf = state["momentum_buffer"]
            buf.lerp_(grads, 1 - group["momentum"])
            update = grads.lerp_(buf, group["momentum"])  # Nesterov: look ahead along the momentum
            update = newton_schulz(update, group["ns_steps"]).to(grads.dtype)
            rows, cols = params[0].shape
            scale = max(1.0, rows / cols) ** 0.5         # same RMS step for tall matrices
            torch._foreach_add_(params, list(update.unbind(0)), alpha=-group["lr"] * scale)


# ---------------------------------------------------------------------------
# Setup: tokenizer, model, optimizers, data

tokenizer = Tokenizer.from_directory()
VOCAB = tokenizer.get_vocab_size()
cfg = GPTConfig(vocab_size=VOCAB, seq_len=MAX_SEQ_LEN, depth=DEPTH, width=WIDTH, head_dim=HEAD_DIM)
with torch.device(DEVICE):
    raw_model = GPT(cfg)
raw_model.init_weights()

num_params = sum(p.numel() for p in raw_model.parameters())
num_embed = raw_model.wte.weight.numel()
# FLOPs per token: 6 per weight (forward 2, backward 4) for every matmul weight, i.e. all
# parameters but the embedding lookup (lm_head included), plus attention's QK^T and AV:
# 12 * depth * width * seq_len (counted as full, not causal-halved, as autoresearch does).
FLOPS_PER_TOKEN = 6 * (num_params - num_embed) + 12 * DEPTH * WIDTH * MAX_SEQ_LEN

matrix_params = [p for b in raw_model.blocks for p in b.parameters()]
assert all(p.dim() == 2 for p in matrix_params)
lr_scale = (WIDTH / 768) ** -0.5
adam_groups = [
    dict(params=[raw_model.wte.weight], lr=EMBED_LR * lr_scale),
    dict(params=[raw_model.lm_head.weight], lr=HEAD_LR * lr_scale),
]
adam_kwargs = dict(betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0)
if IS_CUDA:
    adam_kwargs["fused"] = True                      # one kernel for all AdamW parameters
adamw = torch.optim.AdamW(adam_groups, **adam_kwargs)
muon = Muon(matrix_params, lr=MATRIX_LR, momentum=MUON_MOMENTUM_START)
optimizers = [adamw, muon]
for opt in optimizers:
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]

# torch.compile on CUDA only: the CPU run stays eager (no compiler start-up, simpler to debug)
model = torch.compile(raw_model, dynamic=False) if IS_CUDA else raw_model

MICRO_BATCH_TOKENS = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
GRAD_ACCUM = max(1, TOTAL_BATCH_TOKENS // MICRO_BATCH_TOKENS)
TOKENS_PER_STEP = GRAD_ACCUM * MICRO_BATCH_TOKENS
UNTIMED_STEPS = UNTIMED_STEPS_CUDA if IS_CUDA else 0  # on the CPU every step counts
PEAK_FLOPS = prepare.PEAK_FLOPS

print(
    f"model: depth={DEPTH} width={WIDTH} heads={WIDTH // HEAD_DIM}x{HEAD_DIM} vocab={VOCAB} "
    f"params={num_params / 1e6:.2f}M flops_per_token={FLOPS_PER_TOKEN / 1e6:.1f}M",
    flush=True,
)
print(
    f"setup: device={DEVICE.type} benchmark={prepare.BENCHMARK} seed={prepare.SEED} "
    f"batch={DEVICE_BATCH_SIZE}x{MAX_SEQ_LEN} grad_accum={GRAD_ACCUM} tokens_per_step={TOKENS_PER_STEP} "
    f"budget={TIME_BUDGET:.1f}s",
    flush=True,
)


def lr_multiplier(progress):
    # progress = elapsed training time / budget, in [0, 1]
    if progress < WARMUP_FRAC:
        return (progress + 1e-8) / WARMUP_FRAC
    if progress < 1.0 - WARMDOWN_FRAC:
        return 1.0
    frac = (1.0 - progress) / WARMDOWN_FRAC
    return frac + (1.0 - frac) * FINAL_LR_FRAC


def muon_momentum(step):
    frac = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1.0)
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM_END


def sync():
    if IS_CUDA:
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------
# Training loop. The budget is training time as measured here: step times, each ending in a
# device sync, summed (on CUDA without the first UNTIMED_STEPS compile warm-up steps).

train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
x, y, epoch = next(train_loader)

step = 0
training_time = 0.0          # counted seconds, drives the schedule and the stop
timed_steps = 0
log_tokens, log_time, last_log = 0, 0.0, time.time()
model.train()
while True:
    lr_mult = lr_multiplier(min(training_time / TIME_BUDGET, 1.0))
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lr_mult
    for group in muon.param_groups:
        group["momentum"] = muon_momentum(step)

    t0 = time.time()
    step_loss = None
    for _ in range(GRAD_ACCUM):
        with AUTOCAST:
            loss = model(x, y)
        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
        (loss / GRAD_ACCUM).backward()
        x, y, epoch = next(train_loader)  # fetch the next batch while the device works
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    sync()                                           # the only per-step sync: honest step times
    dt = time.time() - t0

    step += 1
    if step > UNTIMED_STEPS:
        training_time += dt
        timed_steps += 1
    log_tokens += TOKENS_PER_STEP
    log_time += dt
    done = training_time >= TIME_BUDGET

    if step == 1:
        # a GC pass can stall a step for ~100s of ms: freeze what exists, no automatic passes
        gc.collect()
        gc.freeze()
        gc.disable()

    now = time.time()
    if done or step == 1 or now - last_log >= LOG_EVERY_S:
        loss_f = (step_loss / GRAD_ACCUM).item()     # the only .item(): on logging steps
        if not math.isfinite(loss_f) or loss_f > 100:
            print(f"FAIL: loss is {'nan' if math.isnan(loss_f) else f'{loss_f:.4f}'}", flush=True)
            sys.exit(1)
        tok_s = log_tokens / max(log_time, 1e-9)
        mfu = "unknown" if not PEAK_FLOPS else f"{100 * FLOPS_PER_TOKEN * tok_s / PEAK_FLOPS:.2f}"
        print(
            f"progress step={step} elapsed={training_time:.2f} budget={TIME_BUDGET:.1f} "
            f"loss={loss_f:.6f} lr_mult={lr_mult:.3f} tok_s={tok_s:.0f} mfu={mfu}",
            flush=True,
        )
        log_tokens, log_time, last_log = 0, 0.0, now
    if done:
        break

gc.enable()

# ---------------------------------------------------------------------------
# Evaluation (the fixed metric) and the summary block

raw_model.eval()                                     # eager module: no recompile for eval shapes
with torch.no_grad(), AUTOCAST:
    val_bpb = evaluate_bpb(raw_model, tokenizer, DEVICE_BATCH_SIZE)

total_seconds = time.time() - T_START
peak_vram_mb = torch.cuda.max_memory_allocated() / 1024 / 1024 if IS_CUDA else 0.0
if PEAK_FLOPS and training_time > 0:
    mfu_str = f"{100 * FLOPS_PER_TOKEN * TOKENS_PER_STEP * timed_steps / training_time / PEAK_FLOPS:.2f}"
else:
    mfu_str = "unknown (peak FLOP/s not given)"

print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds:    {total_seconds:.1f}")
print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
print(f"mfu_percent:      {mfu_str}")
print(f"total_tokens_M:   {step * TOKENS_PER_STEP / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}", flush=True)
