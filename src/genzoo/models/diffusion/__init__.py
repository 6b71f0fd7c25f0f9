"""Diffusion and flow-matching models on one form, x_t = s(t) (x_0 + sigma(t) eps).

The math core (no networks, no nn.Module):

* :mod:`.process`    - the Gaussian processes (VP/DDPM, VP-cosine, VE, EDM, flow matching)
  and the sampling time grids (:func:`time_grid`);
* :mod:`.precond`    - network output parameterisations -> denoiser D(x_t; t);
* :mod:`.losses`     - DDPM simple loss, EDM weighted loss, conditional flow matching;
* :mod:`.samplers`   - pure sampler functions ``sample_xxx(denoiser, x, ts, process)``;
* :mod:`.likelihood` - probability-flow ODE log-likelihood.

See ``docs/diffusion.md`` for the conventions and the mappings to other libraries.
"""
from __future__ import annotations

from .likelihood import ode_log_prob  # noqa: F401
from .losses import LOSSES, diffusion_loss  # noqa: F401
from .precond import (  # noqa: F401
    PARAMS,
    denoise,
    edm_coefficients,
    eps_from_x0,
    score_from_x0,
    v_from_x0,
    velocity_from_x0,
)
from .process import (  # noqa: F401
    EDM,
    GRID_KINDS,
    PROCESSES,
    VE,
    VP,
    FlowMatching,
    Process,
    make_process,
    process_from_dict,
    time_grid,
)
from .samplers import SAMPLERS, ddim_invert, nfe, run_sampler, sampler_options  # noqa: F401
from .model import Diffusion  # noqa: F401,E402  (registers "diffusion"; after the core it uses)
from .shortcut import Shortcut  # noqa: F401,E402  (registers "shortcut")
from .discrete import DiscreteDiffusion  # noqa: F401,E402  (registers "discrete_diffusion")
from .pfgm import PFGM  # noqa: F401,E402  (registers "pfgm")
