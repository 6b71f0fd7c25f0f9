"""The reference a user would otherwise write: a plain PyTorch loop around diffusers' UNet2DModel
and DDPMScheduler (the "train_unconditional" example, trimmed), for the diffusion benchmark.

It gets the same data (genzoo's dequantised MNIST in [-1, 1], batch 64, same seeds), the same
optimiser recipe as configs/ddpm.yaml (AdamW lr 1e-3, 200 warm-up steps then cosine to 0.1x over
the time budget, grad-norm clip 1.0, EMA 0.999 with the same warm-up) and a UNet of comparable
size (block_out_channels 32/64/64, one res block per level, attention at 7x7: 1.11 M parameters
against genzoo's 1.19 M). Only the framework differs.

The loop checkpoints atomically every ``ckpt_every_s`` seconds (safetensors + JSON, through
genzoo's checkpoint module; no pickle) and resumes, counting the budget across restarts.
diffusers is optional: this module is imported only when it is installed.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

BATCH = 64
LR = 1e-3
WARMUP = 200
MIN_LR_RATIO = 0.1
EMA_DECAY = 0.999


def make_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def _lr(step: int, frac: float) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train(run_dir: Path, budget_s: float, *, max_steps: int | None = None, ckpt_every_s: float = 300.0,
          seed: int = 0, log=print) -> dict:
    """Train for ``budget_s`` seconds of wall clock (or ``max_steps``); resumable. Returns the summary dict."""
    from genzoo.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from genzoo.train.ema import EMA
    from genzoo.train.run import load_data
    from genzoo.train.trainer import derive_seed

    run_dir = Path(run_dir)
    summary_path = run_dir / "train_summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    data = load_data({"name": "mnist", "dequantize": "uniform"}, "train")
    torch.manual_seed(seed)
    unet, sched = make_unet(), make_scheduler()
    ema = EMA(unet, EMA_DECAY)
    opt = torch.optim.AdamW(unet.parameters(), lr=LR)
    step, elapsed = 0, 0.0
    ck = latest_checkpoint(run_dir)
    if ck is not None:
        state = load_checkpoint(ck)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["extra"]["opt"])
        step, elapsed = state["step"], state["extra"]["elapsed"]
        log(f"[diffusers] resumed at step {step} ({elapsed:.0f} s of {budget_s:.0f} s)")
    n = len(data)
    t0, last_ck, start_step = time.perf_counter(), time.perf_counter(), step
    unet.train()
    while True:
        now = time.perf_counter()
        frac = (elapsed + now - t0) / budget_s
        if frac >= 1.0 or (max_steps is not None and step >= max_steps):
            break
        g = torch.Generator().manual_seed(derive_seed(seed, step, 0xD1FF))
        idx = torch.randint(0, n, (BATCH,), generator=g)
        x, _ = data.get_batch(idx, g)
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (BATCH,), generator=g)
        xt = sched.add_noise(x, noise, t)
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
        for group in opt.param_groups:
            group["lr"] = _lr(step, frac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        ema.update(unet, step)
        if step % 200 == 0:
            log(f"[diffusers] step {step} loss {loss.item():.4f} ({elapsed + time.perf_counter() - t0:.0f} s)")
        if time.perf_counter() - last_ck > ckpt_every_s:
            save_checkpoint(run_dir / "checkpoints", step, model_state=unet.state_dict(), ema_state=ema.state_dict(),
                            extra={"opt": opt.state_dict(), "elapsed": elapsed + time.perf_counter() - t0})
            last_ck = time.perf_counter()
    wall = time.perf_counter() - t0
    save_checkpoint(run_dir / "checkpoints", step, model_state=unet.state_dict(), ema_state=ema.state_dict(),
                    extra={"opt": opt.state_dict(), "elapsed": elapsed + wall})
    summary = {"steps": step, "train_seconds": elapsed + wall,
               "images_per_s": round((step - start_step) * BATCH / max(wall, 1e-9), 1),
               "parameters": sum(p.numel() for p in unet.parameters())}
    if max_steps is None:  # a probe run is not a finished budgeted run
        from genzoo.core.checkpoint import atomic_write_text

        atomic_write_text(summary_path, json.dumps(summary, indent=2))
    return summary


def load_ema(run_dir: Path):
    from genzoo.core.checkpoint import latest_checkpoint, load_checkpoint

    unet = make_unet()
    unet.load_state_dict(load_checkpoint(latest_checkpoint(Path(run_dir)))["ema"])
    return unet.eval()


@torch.no_grad()
def sample(unet, n: int, steps: int = 50, *, batch_size: int = 250, seed: int = 0, bf16: bool = True) -> torch.Tensor:
    """n images in [-1, 1] with diffusers' DDIMScheduler (eta 0) built from the training scheduler's config;
    ``bf16``: the UNet under bfloat16 autocast (as genzoo's benchmark cells), scheduler arithmetic in float32."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(make_scheduler().config)
    sched.set_timesteps(steps)
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        x = torch.randn((m, 1, 28, 28), generator=g)
        for t in sched.timesteps:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                eps = unet(x, t).sample
            x = sched.step(eps.float(), t, x).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)
