"""Rectified flow's reflow (Liu, Gong & Liu 2022, "Flow Straight and Fast: Learning to Generate
and Transfer Data with Rectified Flow").

1-rectified flow is flow matching with independent pairs (x_0, z): x_t = (1 - t) x_0 + t z,
v(x_t, t) ~ z - x_0 (genzoo's time: data at t = 0, noise at t = 1; the paper's runs the other
way). Its ODE dx/dt = v(x, t) defines a deterministic coupling: z ~ N(0, I) at t = 1 is carried
to x_0 = ODE(z) at t = 0. **Reflow** trains the next flow on those pairs (x_0 = ODE(z), z)
instead of independent ones (the paper's Algorithm 1: "k-rectified flow"), which keeps the
marginals and makes the paths straighter, so few Euler steps suffice (one, when straight).

Straightness (the paper's eq. 5): S(Z) = int_0^1 E || (Z_1 - Z_0) - dZ_t/dt ||^2 dt; zero for
straight paths. :func:`straightness` evaluates it on the discrete trajectory of the Euler
sampler, per dimension.

`genzoo reflow RUN_DIR` generates the pairs with the ODE of a trained flow-matching run
(:func:`generate_pairs`), writes them as a safetensors file (:func:`save_pairs`; read back by
the ``pairs`` data set), and trains the 2-rectified flow on them (``model.coupling=paired``,
initialised from the 1-rectified weights as in the paper).

**Distillation** (the paper's Sec. 2.3): `genzoo reflow RUN_DIR --distill` makes pairs with the
ODE of RUN_DIR (usually the 2-rectified flow) and fine-tunes its network, from RUN_DIR's weights,
only at t = t_max with || D(z; t_max) - ODE(z) ||^2 (``model.coupling=distill``): D(z; t_max) is
the one-step Euler sample, so the result is a one-step generator (sample it with
``sampler=euler steps=1``). :func:`one_step_error` measures its distance to the ODE.
"""
from __future__ import annotations


import torch

from ...data.pairs import load_pairs, save_pairs  # noqa: F401 (re-exported)
from ...errors import ConfigError
from .precond import velocity_from_x0
from .samplers import run_sampler


def check_reflowable(model) -> None:
    if getattr(model, "process_name", None) != "flow":
        raise ConfigError("reflow needs a flow-matching / rectified-flow run (model.process=flow); "
                          f"this run's process is {getattr(model, 'process_name', type(model).__name__)!r}")


#: the deterministic ODE samplers :func:`generate_pairs` accepts (ddim: eta = 0)
PAIR_SAMPLERS = ("euler", "heun", "dpmpp_2m", "ode_adaptive", "ddim")


@torch.no_grad()
def generate_pairs(model, n: int, *, steps: int = 100, sampler: str = "euler", batch_size: int = 500,
                   seed: int = 0, progress: bool = False, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, z): n noises z ~ N(0, I) and the ODE's images x_0 = ODE(z) (deterministic sampler
    on a uniform grid of ``steps``; ``precision="bf16"`` runs the network under bfloat16 autocast,
    the sampler arithmetic stays float32). Returns float32 CPU tensors of shape (n, *model.shape)."""
    check_reflowable(model)
    if sampler not in PAIR_SAMPLERS:
        raise ConfigError(f"reflow pairs need a deterministic ODE sampler ({', '.join(PAIR_SAMPLERS)}), got {sampler!r}")
    from tqdm.auto import tqdm

    D = model.denoiser(precision=precision)
    ts = model.time_grid(steps, "uniform")
    xs, zs = [], []
    for i in tqdm(range(0, n, batch_size), desc="reflow pairs", disable=not progress):
        m = min(batch_size, n - i)
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        z = torch.randn((m, *model.shape), generator=g).to(model.device)
        x = run_sampler(sampler, D, z, ts, model.process)
        if model.sample_range is not None:
            x = x.clamp(*model.sample_range)
        xs.append(x.float().cpu())
        zs.append(z.float().cpu())
    return torch.cat(xs), torch.cat(zs)


@torch.no_grad()
def straightness(model, n: int = 1000, steps: int = 100, *, seed: int = 0, batch_size: int = 1000) -> float:
    """Liu et al.'s straightness S = int_0^1 E ||(x(1) - x(0)) - dx/dt||^2 dt of the model's
    Euler trajectories from z ~ N(0, I), per dimension (0 = straight lines)."""
    check_reflowable(model)
    D = model.denoiser()
    ts = model.time_grid(steps, "uniform").to(torch.float64)
    total, count = 0.0, 0
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        x = torch.randn((m, *model.shape), generator=g).to(model.device)
        path = [x]
        for k in range(steps):  # Euler: record every point of the trajectory
            t, t_next = float(ts[k]), float(ts[k + 1])
            tt = torch.full((m,), t, device=x.device, dtype=x.dtype)
            v = velocity_from_x0(x, D(x, tt), tt, model.process)  # the probability-flow drift dx/dt
            x = x + (t_next - t) * v
            path.append(x)
        chord = path[0] - path[-1]  # x(1) - x(0), per unit of t
        for k in range(steps):
            vk = (path[k] - path[k + 1]) / float(ts[k] - ts[k + 1])
            total += float(ts[k] - ts[k + 1]) * float(((chord - vk) ** 2).flatten(1).mean(1).sum())
        count += m
    return total / count


@torch.no_grad()
def one_step_error(model, x0: torch.Tensor, z: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean squared error per dimension between the model's one-step Euler sample from z
    (t_max -> 0) and x0 (the teacher ODE's image of z): what distillation minimises."""
    D = model.denoiser()
    ts = model.time_grid(1, "uniform")
    total = 0.0
    for i in range(0, len(z), batch_size):
        zb = z[i:i + batch_size].to(model.device)
        x = run_sampler("euler", D, zb, ts, model.process)
        total += float(((x.float().cpu() - x0[i:i + batch_size]) ** 2).flatten(1).mean(1).sum())
    return total / len(z)
