"""A small, fast candidate for harness tests: a bigram model trained for the budget, then scored."""
import time

import torch

from prepare import SEED, TIME_BUDGET, VOCAB_SIZE, Tokenizer, evaluate_bpb, make_dataloader

torch.manual_seed(SEED)
print(f"seed={SEED}", flush=True)


class Bigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(VOCAB_SIZE, VOCAB_SIZE)

    def forward(self, x, targets=None, reduction="mean"):
        logits = self.table(x)
        if targets is None:
            return logits
        return torch.nn.functional.cross_entropy(logits.view(-1, VOCAB_SIZE), targets.reshape(-1), reduction=reduction)


tok = Tokenizer.from_directory()
model = Bigram()
opt = torch.optim.Adam(model.parameters(), lr=0.05)
loader = make_dataloader(tok, 16, 128, "train")
t0 = time.time()
step = 0
while time.time() - t0 < TIME_BUDGET:
    x, y, _ = next(loader)
    loss = model(x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    step += 1
    if step % 10 == 0:
        print(f"progress step={step} elapsed={time.time() - t0:.2f} budget={TIME_BUDGET} loss={loss.item():.6f} "
              f"lr_mult=1.000 tok_s=0 mfu=unknown", flush=True)
training = time.time() - t0
bpb = evaluate_bpb(model, tok, 64)
print("---")
print(f"val_bpb:          {bpb:.6f}")
print(f"training_seconds: {training:.1f}")
print(f"total_seconds:    {time.time() - t0:.1f}")
print("peak_vram_mb:     0.0")
print("mfu_percent:      unknown (peak FLOP/s not given)")
print(f"total_tokens_M:   {step * 16 * 128 / 1e6:.3f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {VOCAB_SIZE * VOCAB_SIZE / 1e6:.2f}")
print("depth:            0")
