"""The benchmark's report: SUNDAE / AR latency ratios, the Markdown tables of bench.md, and the
target lines (the speed aims: a full sample within 1.5x of its FLOP floor, training MFU >= 35 %)."""

from __future__ import annotations

from typing import Callable

from .bench_cases import SAMPLER_TAU


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def ratios(report: dict) -> list[dict]:
    """SUNDAE / AR latency per model, batch and T: measured full sampling at batch 1 where the
    sample section ran it at the first thread count (the AR section's), else T x the measured
    step latency."""
    out, compute = [], compute_of(report)
    steps = {(r["model"], r["batch"]): r["median_s"] for r in report["step"] if r["case"] == "prior"
             and r["dtype"] == compute}
    sampled = {}
    threads = report["environment"]["threads"][0]  # the AR and step sections ran at the first count
    for r in sorted(report["sample"], key=lambda r: -r["prior_s"]):  # the fastest measured sample wins
        if r["threads"] == threads:
            sampled[(r["model"], r["steps"])] = r["prior_s"]
    for ar in report["ar"]:
        for t in report["settings"]["sample_steps"]:
            measured = sampled.get((ar["model"], t)) if ar["batch"] == 1 else None
            est = steps.get((ar["model"], ar["batch"]))
            sundae = measured if measured is not None else (t * est if est is not None else None)
            if sundae is None:
                continue
            out.append({"model": ar["model"], "batch": ar["batch"], "steps": t, "sundae_s": sundae,
                        "sundae_source": "measured sample" if measured is not None else "T x step latency",
                        "ar_s": ar["median_s"], "ratio": sundae / ar["median_s"]})
    return out


def compute_of(report: dict) -> str:
    """The dtype the report's inference and training cases ran in (bf16 before it was recorded)."""
    return report["environment"].get("compute_dtype", "bf16")


def _table(title: str, rows: list[dict], columns: list[tuple[str, Callable[[dict], object]]]) -> list[str]:
    """A Markdown section: `## title` and one line per row; nothing when there are no rows."""
    if not rows:
        return []
    lines = [f"## {title}", "", "| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell(r)) for _, cell in columns) + " |" for r in rows]
    return lines + [""]


def markdown(report: dict) -> str:
    env, peak, compute = report["environment"], report["peak_flop_per_s"], compute_of(report)
    threads, first = ", ".join(str(t) for t in env["threads"]), _threads(env["threads"][0])
    lines = [f"# SUNDAE benchmark ({env['device']}; {env['cpu']}; threads {threads}; torch {env['torch']})", "",
             f"- command: `{env['command']}`",
             f"- CPU: {env['cpu']} ({env['cores']} cores); torch threads: {threads} (the full sample runs at each, "
             f"the other sections at {first}); load average before / after: {env['load_before']} / "
             f"{env['load_after']}",
             f"- measured matmul peak at {first}: "
             + ", ".join(f"{name} {_fmt(rate / 1e9, 0)} GFLOP/s" for name, rate in peak.items())
             + f"; models run in {compute}" + ("" if compute == "bf16" else " (this CPU has no bf16 hardware)"),
             f"- random weights; timings are medians of synchronised runs after a warm-up; memory is the "
             f"peak RSS above the level before each case (see `trainers/benchmark/bench_timing.py`); "
             f"process high-water "
             f"{_fmt(report['max_rss_mb'], 0)} MB; total wall time {_fmt(report['wall_s'], 0)} s", ""]
    grid = lambda r: f"{r['grid'][0]}x{r['grid'][1]}"
    pct = lambda key: lambda r: "-" if r.get(key) is None else _fmt(100 * r[key])
    mb = lambda r: _fmt(r["peak_mem_mb"], 0)
    lines += _table("Denoising step (forward + sampler)", report["step"], [
        ("network", lambda r: f"{'hourglass' if r['case'] == 'prior' else 'vanilla'} {r['depth']}"),
        ("model", lambda r: r["model"]), ("grid", grid), ("dtype", lambda r: r["dtype"]),
        ("batch", lambda r: r["batch"]), ("step ms", lambda r: _fmt(r["median_s"] * 1e3)),
        ("sampler ms", lambda r: _fmt(r["sampler_s"] * 1e3)), ("tokens/s", lambda r: _fmt(r["tokens_per_s"], 0)),
        ("GFLOP", lambda r: _fmt(r["flops"] / 1e9)), ("GFLOP/s", lambda r: _fmt(r["flop_per_s"] / 1e9, 0)),
        ("% bf16 peak", pct("frac_bf16_peak")), ("% own-dtype peak", pct("frac_dtype_peak")), ("peak MB", mb)])
    share = lambda key: lambda r: _fmt(100 * r[key], 0) + " %" if r.get(key) is not None else "-"
    lines += _table(f"Full sample, batch 1, {compute} (prior T steps + VQ-GAN decode)", report["sample"], [
        ("model", lambda r: r["model"]), ("output", lambda r: r["output"]), ("mode", lambda r: r.get("mode", "eager")),
        ("threads", lambda r: r["threads"]), (f"{compute} peak GFLOP/s", lambda r: _fmt(r["peak_flop_per_s"] / 1e9, 0)),
        ("T", lambda r: r["steps"]), ("total s", lambda r: _fmt(r["median_s"], 2)),
        ("prior s", lambda r: _fmt(r["prior_s"], 2)), ("decode s", lambda r: _fmt(r["decode_s"], 2)),
        ("TFLOP", lambda r: _fmt(r["flops"] / 1e12, 2)), ("GFLOP/s", lambda r: _fmt(r["flop_per_s"] / 1e9, 0)),
        ("floor s", lambda r: _fmt(r["bound_s"], 3)), ("prior x floor", lambda r: _fmt(r["prior_over_bound"], 2)),
        ("decode x floor", lambda r: _fmt(r["decode_over_bound"], 2)),
        ("total x floor", lambda r: _fmt(r["over_bound"], 2)),
        ("prior % outside mm/conv/attn", share("prior_outside_share")),
        ("decode % outside mm/conv/attn", share("decode_outside_share")),
        ("first call s (warm-up / compile; not in total)", lambda r: _fmt(r.get("warm_up_s"), 1)),
        ("peak MB", mb)])
    if report["sample"]:
        lines += ["Floors: prior = T x the forward's FLOPs (`hourglass.flops`: the vocabulary head at every "
                  "position), decode = the decoder's FLOPs as the architecture defines it (inference runs its "
                  "upsampling convolutions in sub-pixel form, which does 0.44 of the f = 32 decoder's 3.07 TFLOP "
                  "fewer: `vqgan.Upsample`), each over the matmul peak in the row's dtype measured at its "
                  "thread count just before the case; x floor = measured seconds / floor. % outside: self CPU "
                  "time of one profiled prior step (`denoise_step`, proportion 0.5) and one profiled decode spent "
                  "outside matmul, convolution and attention kernels. First call: the warm-up run (2 steps and a "
                  "decode; in compiled mode it compiles), not part of any timed figure.", ""]
    lines += _table(f"Autoregressive baseline (KV cache, {compute})", report["ar"], [
        ("model", lambda r: r["model"]), ("layers", lambda r: r["layers"]), ("tokens", lambda r: r["tokens"]),
        ("batch", lambda r: r["batch"]), ("AR s", lambda r: _fmt(r["median_s"], 2)),
        ("tokens/s", lambda r: _fmt(r["tokens_per_s"], 0)), ("GFLOP/s", lambda r: _fmt(r["flop_per_s"] / 1e9, 0)),
        ("peak MB", mb)])
    lines += _table("SUNDAE / AR latency", report["ratios"], [
        ("model", lambda r: r["model"]), ("batch", lambda r: r["batch"]), ("T", lambda r: r["steps"]),
        ("SUNDAE s", lambda r: _fmt(r["sundae_s"], 2)), ("source", lambda r: r["sundae_source"]),
        ("AR s", lambda r: _fmt(r["ar_s"], 2)), ("SUNDAE / AR", lambda r: _fmt(r["ratio"], 2))])
    lines += _table(f"Prior training ({'bf16 autocast' if compute == 'bf16' else 'fp32'}, AdamW)", report["train"], [
        ("model", lambda r: r["model"]), ("grid", grid), ("batch", lambda r: r["batch"]),
        ("unroll", lambda r: r["unroll"]), ("s / step", lambda r: _fmt(r["median_s"], 2)),
        ("tokens/s", lambda r: _fmt(r["tokens_per_s"], 0)), ("model TFLOP / step", lambda r: _fmt(r["flops"] / 1e12, 2)),
        (f"MFU % of {compute} peak", pct("mfu")), ("peak MB", mb)])
    lines += _table("VQ-GAN training step (full: generator with LPIPS + adaptive-weight GAN, then discriminator; "
                    "decoder: the encoder frozen, no GAN, as the campaign's decoder runs; Adam)",
                    report["vqgan_train"], [
        ("config", lambda r: r["config"]), ("precision", lambda r: r["precision"]), ("phase", lambda r: r["phase"]),
        ("batch", lambda r: r["batch"]), ("crop", lambda r: r["crop"]), ("LPIPS", lambda r: r["lpips"]),
        ("s / step", lambda r: _fmt(r["median_s"], 2)), ("images/s", lambda r: _fmt(r["images_per_s"], 1)),
        ("GFLOP / step", lambda r: _fmt(r["flops"] / 1e9, 1)), (f"MFU % of {compute} peak", pct("mfu")),
        ("% outside FLOP kernels", lambda r: _fmt(None if r["outside_share"] is None else 100 * r["outside_share"])),
        ("speed vs fp32", lambda r: _fmt(r["speed_vs_fp32"], 2)), ("peak MB", mb)])
    lines += _table(f"VQ-GAN encode / decode, batch 1, {compute} decoder weights, inference_mode",
                    report["vqgan_codec"], [
        ("model", lambda r: r["model"]), ("image", lambda r: r["image"]),
        ("tokens", lambda r: f"{r['tokens'][0]}x{r['tokens'][1]}"), ("params M", lambda r: _fmt(r["params_m"], 2)),
        ("encode s", lambda r: _fmt(r["encode_s"], 3)), ("decode s", lambda r: _fmt(r["decode_s"], 3)),
        ("decode GFLOP", lambda r: _fmt(r["decode_flops"] / 1e9, 0)),
        ("decode GFLOP/s", lambda r: _fmt(r["decode_flop_per_s"] / 1e9, 0)),
        ("decode peak MB (model + decode)", lambda r: _fmt(r["decode_peak_mem_mb"], 0)),
        ("encode peak MB (above model)", lambda r: _fmt(r["encode_peak_mem_mb"], 0)),
        ("process RSS at decode MB", lambda r: _fmt(r["decode_process_rss_mb"], 0))])
    lines += _table(f"Sampler: one proposal per position (tau = {SAMPLER_TAU}), median of runs", report["sampler"], [
        ("model", lambda r: r["model"]), ("logits", lambda r: f"{r['shape'][0]} x {r['shape'][1]}"),
        ("dtype", lambda r: r["dtype"]), ("method", lambda r: r["method"]),
        ("ms", lambda r: _fmt(r["median_s"] * 1e3, 2)), ("min ms", lambda r: _fmt(r["min_s"] * 1e3, 2)),
        ("speed vs Categorical", lambda r: _fmt(r["speed_vs_categorical"], 2))])
    targets = report["targets"]
    if targets:
        lines += ["## Targets (1.5x the FLOP floor; 35 % MFU)", ""] + [f"- {t}" for t in targets] + [""]
    return "\n".join(lines)


def targets(report: dict) -> list[str]:
    out = []
    for r in report["sample"]:
        if r["over_bound"] is not None:
            verdict = "meets" if r["over_bound"] <= 1.5 else "misses"
            stages = ", ".join(f"{stage} {r[f'{stage}_over_bound']:.2f}x" for stage in ("prior", "decode")
                               if r[f"{stage}_over_bound"] is not None)
            out.append(f"{r['model']} full sample ({r['mode']}, {_threads(r['threads'])}) at T = {r['steps']}: "
                       f"{r['median_s']:.2f} s = {r['over_bound']:.2f}x its FLOP floor ({stages}; {verdict} the "
                       f"1.5x target)")
    for r in report["train"]:
        if r["mfu"] is not None:
            verdict = "meets" if r["mfu"] >= 0.35 else "misses"
            out.append(f"{r['model']} training MFU {100 * r['mfu']:.1f} % ({verdict} the 35 % target)")
    for r in report["ratios"]:
        faster = "SUNDAE faster" if r["ratio"] < 1 else "AR faster"
        out.append(f"{r['model']} batch {r['batch']}: SUNDAE T = {r['steps']} / AR = {r['ratio']:.2f} ({faster})")
    return out + vqgan_targets(report) + sampler_targets(report)


def vqgan_targets(report: dict) -> list[str]:
    out = []
    for r in report["vqgan_train"]:
        if r["precision"] != "fp32" and r["speed_vs_fp32"] is not None:
            out.append(f"VQ-GAN training ({r['config']}, batch {r['batch']}, {r['crop']} px): {r['images_per_s']:.1f} "
                       f"images/s in {r['precision']} = {r['speed_vs_fp32']:.2f}x fp32")
    for r in report["vqgan_codec"]:
        verdict = "fits" if r["decode_fits_8gb"] else "does not fit"
        process = (f"; the whole process peaked at {r['decode_process_rss_mb']:,.0f} MB"
                   if r["decode_process_rss_mb"] is not None else "")
        out.append(f"{r['model']} VQ-GAN {r['image']} decode: {r['decode_s']:.3f} s, peak "
                   f"+{r['decode_peak_mem_mb']:,.0f} MB for model and decode ({verdict} in 8 GB){process}")
    return out


def sampler_targets(report: dict) -> list[str]:
    """A default Categorical draw is not cheap next to the network (docs/architecture.md, "Sampler
    cost"); what do ours and the whole sampler step cost next to a network step?"""
    out, compute = [], compute_of(report)
    steps = {(r["model"], r["dtype"]): r["median_s"] for r in report["step"]
             if r["case"] == "prior" and r["batch"] == 1}
    for dtype in dict.fromkeys(r["dtype"] for r in report["sampler"]):
        rows = {r["method"]: r for r in report["sampler"] if r["dtype"] == dtype}
        base, ours = rows["torch Categorical"], rows["inverse-CDF (ours)"]
        step = rows["denoise_step, p = 0.5 (ours)"]
        n, v = base["shape"]
        line = (f"proposals over {n} x {v} {dtype} logits: Categorical {base['median_s'] * 1e3:.2f} ms, ours "
                f"{ours['median_s'] * 1e3:.2f} ms ({ours['speed_vs_categorical']:.1f}x faster), Gumbel-max "
                f"{rows['Gumbel-max']['median_s'] * 1e3:.2f} ms; our whole sampler step "
                f"{step['median_s'] * 1e3:.2f} ms")
        network_step = steps.get((base["model"], compute))
        if network_step:
            line += (f" = {100 * step['median_s'] / network_step:.1f} % of the {base['model']} "
                     f"{compute} batch-1 step")
        out.append(line)
    return out
