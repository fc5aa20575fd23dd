"""A stage streamed in row bands (mi2v_export/streaming.py) as a budget export's choice for a stage too large to
run whole.

A window recomputes the stage's whole receptive field around itself (56 video pixels each side for the 720p
Turbo-VAED's last stage). Streamed, the stage is cut into its smallest steps (mi2v_export/models/stages.py
`fine_steps`); each runs on full-width bands with its own halo of one or two rows, and the maps between the steps
are never whole. The search tries band heights, tallest first, as a stage's search tries windows
(exporters/tile_search.py). Each probe exports every step's band model and measures the steps streamed on the
stage's whole input. Bands are exact: streaming copies each band's core, so a blended `--halo` does not apply.

Why streaming is tried before windows, and what it does not do: at the one 720p budget where both fit (1100 MiB on
onnxruntime) streaming was 3 % faster for 10 % more memory
(benchmarks/results/tiled_720p_onnx_decoder_streamed_1100.json, tiled_720p_onnx_decoder_windows_1100.json). Every
step is a resident model with its own working memory, so at small budgets it does not fit where windows do: at
512 MiB the search falls through to windows.
"""

from __future__ import annotations

import math

from mi2v_export import tiling
from mi2v_export.models.stages import Stage, fine_steps

from . import tiled
from .tile_search import SearchContext, StageSearch

MAX_BANDS = 24  # the most bands a frame is cut into (the 720p frame: 32 video rows each)


def band_heights(rows: int) -> list[int]:
    """Band heights (video rows, multiples of 32) that cut `rows` into 2..MAX_BANDS bands, tallest first."""
    out = {max(math.ceil(rows / n / tiling.TILE_MULTIPLE) * tiling.TILE_MULTIPLE, tiling.TILE_MULTIPLE)
           for n in range(2, MAX_BANDS + 1)}
    return sorted((h for h in out if h < rows), reverse=True)


def band_plans(name: str, stages: list[Stage], parts: list[Stage], fields: list[int],
               band: int) -> list[tiling.StagePlan]:
    """Each step's plan for full-width bands of `band` video rows, its halo its own receptive field (exact)."""
    video = tiled.video_hw(name, stages)
    return [tiling.plan_stage(p.input_shape[-2:], p.output_shape[-2:], video, (band, video[1]), f)
            for p, f in zip(parts, fields)]


class StreamSearch(StageSearch):
    """Stage k streamed: its steps (`parts`, with their receptive `fields`) and the band heights to try. Its entries
    carry `stream: k`, which sessions read as one group run band by band (mi2v_export/runtimes/sessions.py)."""

    def __init__(self, ctx: SearchContext, k: int, parts: list[Stage], fields: list[int]):
        video = tiled.video_hw(ctx.spec.name, ctx.stages)
        ordered = [(band, band_plans(ctx.spec.name, ctx.stages, parts, fields, band))
                   for band in band_heights(video[0])]
        super().__init__(ctx, k, ordered)
        self.parts, self.fields, self.width = parts, fields, video[1]

    @classmethod
    def of(cls, ctx: SearchContext, k: int) -> "StreamSearch | None":
        """The search for stage k, None when its frame is too short to cut into bands."""
        parts = fine_steps(ctx.stages[k])
        search = cls(ctx, k, parts, [tiled.stage_field(p) for p in parts])
        return search if search.ordered else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.parts[0].input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.parts[-1].output_shape

    def export(self, folder, i: int):
        ctx = self.ctx
        return export_group(ctx.spec, ctx.exporter, ctx.options, folder, ctx.progress, self.k, self.parts,
                            self.ordered[i][1])

    def plans(self, i: int) -> list[tiling.StagePlan]:
        return list(self.ordered[i][1])

    def times(self, i: int) -> list[None]:
        return [None] * len(self.parts)  # streamed bands hold the whole clip

    def tile_of(self, i: int) -> list[int]:
        return [self.ordered[i][0], self.width]

    def bands(self, i: int) -> int:
        return sum(p.grid.count for p in self.ordered[i][1])

    def describe(self, i: int) -> str:
        return (f"stage {self.k} streamed in {len(self.parts)} steps, bands of {self.ordered[i][0]} rows "
                f"({self.bands(i)} band runs)")

    def probe_record(self, i: int, got: int | None) -> dict:
        return {"stage": self.k, "tile": self.tile_of(i), "windows": self.bands(i), "bytes": got,
                "streamed_steps": len(self.parts)}


def export_group(spec, exporter, options, folder, progress, k0: int, parts: list[Stage],
                 plans: list[tiling.StagePlan]) -> tuple[list[dict], list, list[str]]:
    """Export a streamed group's steps as stages k0, k0 + 1, …: (their entries, each marked `stream: k0`, the
    artifacts, inspect checks)."""
    done = [tiled.export_stage(spec, exporter, options, folder, progress, k0 + j, part, p)
            for j, (part, p) in enumerate(zip(parts, plans))]
    return [dict(e, stream=k0) for e, _, _ in done], [a for _, a, _ in done], [c for *_, cs in done for c in cs]


def export_streamed(spec, exporter, options, folder, progress, request, stages: list[Stage]) -> tuple:
    """`--stream-rows PX`: every stage streamed in bands of PX video rows, each its own group (the tensors between
    stages are small). (artifact, inspect checks)."""
    parts_all, plans, entries, arts, checks = [], [], [], [], []
    for stage in stages:
        parts = fine_steps(stage)
        group = band_plans(spec.name, stages, parts, [tiled.stage_field(p) for p in parts], request.stream_rows)
        es, ars, cs = export_group(spec, exporter, options, folder, progress, len(parts_all), parts, group)
        entries, arts, checks = entries + es, arts + ars, checks + cs
        parts_all += parts
        plans += group
    video = tiled.video_hw(spec.name, stages)
    record = tiled.tiling_record(spec.name, parts_all, plans, request, (request.stream_rows, video[1]))
    return tiled.assemble(spec, parts_all, entries, arts, record), checks


__all__ = ["StreamSearch", "band_heights", "band_plans", "export_group", "export_streamed"]
