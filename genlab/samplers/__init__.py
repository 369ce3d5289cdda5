"""Samplers as plain functions of a noise predictor or score (no networks), registered in SAMPLERS.

Importing this package registers: ancestral, ddim, dpm-solver++, sde-dpm-solver++ (eps_fn +
NoiseSchedule); langevin (score_fn(x, sigma) + sigmas); euler-maruyama, pc, ode (score_fn(x, t) +
an SDE). Every random draw takes the `generator` argument.
"""

from genlab.samplers.ancestral import ancestral, ddim
from genlab.samplers.dpm_solver import dpm_solver_pp, sde_dpm_solver_pp
from genlab.samplers.langevin import annealed_langevin
from genlab.samplers.sde_solvers import euler_maruyama, predictor_corrector, probability_flow_ode

__all__ = [
    "ancestral",
    "ddim",
    "dpm_solver_pp",
    "sde_dpm_solver_pp",
    "annealed_langevin",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow_ode",
]
