"""Mobile attention rewrites for the MobileI2V denoiser (issue 4): exact, checkpoint-preserving module swaps.

Public API (a contract):

    from mi2v_export.kernels import rewrite, describe_plan
    fast = rewrite(load_denoiser(...), plan="mobile", grid=(3, 23, 40), schedule=[(1000, 2.0)])
    fast(latent, timestep, flow_score)          # same forward as load_denoiser's
    manifest["attention"] = describe_plan(fast)  # JSON-able: applied rewrites, settings, baked constants

Plans: "reference" (none), "mobile" (rewrites that help the CPU runtimes), "ane" (+ channels-first layout); every
rewrite and knob of `RewritePlan` can be overridden by keyword. See plan.py for the registry.
"""

from .constants import BakedScheduleError, StepConstants
from .denoiser import MobileBlock, MobileDenoiser, MobileFinalLayer
from .layout import Conv1x1
from .linear_attention import MobileLinearAttention
from .plan import PLAN_DOCS, PLANS, REWRITES, Rewrite, RewritePlan, describe_plan, make_plan, rewrite
from .softmax_attention import MobileSoftmaxAttention

__all__ = ["rewrite", "describe_plan", "make_plan", "RewritePlan", "PLANS", "PLAN_DOCS", "REWRITES", "Rewrite",
           "MobileDenoiser", "MobileBlock", "MobileFinalLayer", "MobileLinearAttention", "MobileSoftmaxAttention",
           "Conv1x1", "StepConstants", "BakedScheduleError"]
