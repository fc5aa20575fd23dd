"""Integer precisions that clear their trajectory gate with margin: when the 2-step video on the artifacts lands
less than `parity.TRAJECTORY_MARGIN_DB` above its gate (or below it), the units that cost the most are kept in
float, chosen by measurement, and the components that hold them are exported again.

Why: a w8a8 export that reaches 30.2 dB against a 30 dB gate passes or fails by the noise of a photo or a
calibration record, and gives 29 dB on another photo (issue 25). Keeping the few sensitive units float buys the
margin for a few percent of the bytes.

How the units are chosen, as `mi2v quantize analyze` measures them (mi2v_export/recipe.py): each unit of each
integer component is quantized alone (simulated in PyTorch) and the 2-step video's worst frame is measured against
the all-fp32 run. Units are taken by the harm they do per byte they would keep float (the error power a unit
adds alone, 10^(-PSNR/10), over its weights' bytes: a greedy answer to "fewest bytes for the gain") until the
simulated video gains what the real one lacks, plus `SLACK_DB`. The components holding them are exported again with those units float (the recipe mechanism of
exporters/quantize/units.py) and the real trajectory is measured again; if the margin is still short, the next
round asks the simulation for more, scaled by how much real gain its last promise bought, for at most `ROUNDS`
rounds. Above `ANALYSIS_PIXELS` the ranking runs at a smaller size of
the same model (the real gate always runs at the export's size). The choice is recorded in each protected
entry's `recipe` (origin "auto-margin"), with its cost in bytes; the entry keeps its precision's name and gate.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from mi2v_export import calibration, recipe
from mi2v_export.parity import TRAJECTORY_MARGIN_DB
from mi2v_export.pipeline import GenerateConfig, Pipeline, TorchStage, compare_runs, load_image
from mi2v_export.precision import RECIPE_PRECISIONS
from mi2v_export.shapes import geometry

SLACK_DB = 0.5  # the simulation's gain is a proxy for the real one: ask it for a little more
ROUNDS = 3
ANALYSIS_PIXELS = 256 * 384  # larger frames rank their units at this many pixels (same aspect, multiples of 32)
ORIGIN = "auto-margin"


@dataclass
class Ranking:
    """Units of the integer components, most harm per byte first, each with the simulated video's worst frame when
    it alone is quantized and its weights' bytes; and the simulated video with every unit quantized."""

    units: list[tuple[str, str, float, int]]  # (component, unit, psnr_db_min, weight bytes)
    all_quantized_db: float
    geometry: tuple[int, int, int]
    simulate: Callable[[dict[str, list[str]]], float] = field(repr=False)

    def first(self, count: int) -> dict[str, list[str]]:
        """The `count` worst units, by component."""
        chosen: dict[str, list[str]] = {}
        for component, unit, _, _ in self.units[:count]:
            chosen.setdefault(component, []).append(unit)
        return chosen


def needed_db(record: dict, margin_db: float = TRAJECTORY_MARGIN_DB) -> float:
    """How much the real video lacks of its gate plus the margin (≤ 0: nothing to do; a NaN frame lacks all)."""
    worst = float(record["psnr_db_min"]) if record.get("psnr_db_min") is not None else math.inf
    return math.inf if math.isnan(worst) else float(record["gate_db"]) + margin_db - worst


def candidates(entries: list, precisions: dict[str, str], user_recipe: bool,
               keeps_units: Callable[[str], bool]) -> list[str]:
    """Components whose precision can keep units float: an integer one a recipe can name and the target's
    quantizer honours, when no --recipe chose the units already."""
    if user_recipe:
        return []
    return [e.component for e in entries
            if precisions.get(e.component) in RECIPE_PRECISIONS and keeps_units(precisions[e.component])]


def rank(stages: dict, components: list[str], precisions: dict[str, str], geo, progress=None) -> Ranking:
    """Every unit of `components` quantized alone (simulated), most harm per byte first."""
    config = _analysis_config(geo)
    image = load_image(calibration.VALIDATION_IMAGE)
    reference = Pipeline(stages).generate(image, config, posterior="mean")

    def simulate(quantized: dict[str, list[str]]) -> float:
        run = dict(stages)
        for component, units in quantized.items():
            model = copy.deepcopy(stages[component].module)
            for unit in units:
                recipe.simulate_unit(model, unit, precisions[component])
            run[component] = TorchStage(component, model)
        result = Pipeline(run).generate(image, config, posterior="mean")
        return float(compare_runs(result, reference, 0.0)["summary"]["min_psnr_db"])

    every = {c: recipe.units_of(c, stages[c].module) for c in components}
    scored = []
    for i, (component, unit) in enumerate((c, u) for c in components for u in every[c]):
        if progress:
            progress(f"{component} {unit}", i)
        weights = sum(p.numel() * p.element_size() for p in stages[component].module.get_submodule(unit).parameters())
        scored.append((component, unit, simulate({component: [unit]}), weights))
    scored.sort(key=lambda s: -_harm(s[2]) / max(s[3], 1))
    return Ranking(scored, simulate(every), (config.height, config.width, config.frames), simulate)


def first_count(ranking: Ranking, need_db: float, at_least: int = 1) -> tuple[int, float]:
    """The fewest units (at least `at_least`) whose float copy gains the simulated video `need_db` + SLACK_DB, and
    that simulated gain (all units when none do)."""
    every = {c: [u for k, u, _, _ in ranking.units if k == c] for c, _, _, _ in ranking.units}
    gain = 0.0
    for count in range(max(at_least, 1), len(ranking.units) + 1):
        kept = ranking.first(count)
        rest = {c: [u for u in units if u not in kept.get(c, [])] for c, units in every.items()}
        gain = ranking.simulate(rest) - ranking.all_quantized_db
        if gain >= need_db + SLACK_DB:
            return count, gain
    return len(ranking.units), gain


def next_need(lack_db: float, simulated_gain: float, real_gain: float) -> float:
    """The simulated gain to ask for next round: the simulation's gain per real dB, measured by the round just
    made, scales what the real video lacked at first (a simulation that only models some of the quantized
    operators under-promises)."""
    if real_gain <= 0.1 or simulated_gain <= 0:
        return lack_db * 2
    return lack_db * max(simulated_gain / real_gain, 1.0)


def recipe_for(component: str, precision: str, stages: dict, kept: list[str], ranking: Ranking,
               round_: int, margin_db: float = TRAJECTORY_MARGIN_DB) -> dict:
    """The recipe the re-export runs with (format of mi2v_export/recipe.py), recording why."""
    model_units = recipe.units_of(component, stages[component].module)
    analysis = {u: {"psnr_db_min": _db(db), "weight_bytes": size} for c, u, db, size in ranking.units if c == component}
    return {"format": recipe.FORMAT, "version": recipe.VERSION, "component": component, "precision": precision,
            "units": {u: ("fp32" if u in kept else precision) for u in model_units}, "origin": ORIGIN,
            "analysis": analysis, "margin_db": margin_db, "round": round_,
            "simulated_psnr_db_min": {"all_units": round(ranking.all_quantized_db, 3)},
            "validation": {"image": calibration.VALIDATION_IMAGE.name, "steps": 2, "seed": 0,
                           "resolution": list(ranking.geometry[:2]), "frames": ranking.geometry[2]}}


def _harm(psnr_db: float) -> float:
    """The error power a unit adds alone (frames in [0, 1]): 0 for a unit that changes nothing."""
    return 0.0 if psnr_db == math.inf else 10 ** (-psnr_db / 10)


def _db(value: float) -> float | str:
    return "inf" if value == math.inf else round(value, 3)


def _analysis_config(geo) -> GenerateConfig:
    height, width, frames = geo.height, geo.width, geo.frames
    if height * width > ANALYSIS_PIXELS:
        scale = math.sqrt(ANALYSIS_PIXELS / (height * width))
        height, width = (max(32, int(side * scale) // 32 * 32) for side in (height, width))
        frames = min(frames, 9)
    small = geometry(height, width, frames)
    return GenerateConfig(small.height, small.width, small.frames, steps=2, seed=0)
