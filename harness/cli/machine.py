"""`harness hw`, `doctor`, `image` and `janitor`: this machine, its images and leftovers."""

from __future__ import annotations

from typing import Optional

import typer

from harness.benchmarks import load_benchmarks
from harness.cli.common import (EXIT_FAILED, EXIT_OK, JsonOpt, app, emit_json, err, fail, recover_orphans)


@app.command()
def hw(as_json: bool = JsonOpt,
       calibrate: bool = typer.Option(False, "--calibrate", help="Also run the calibration micro-benchmark.")) -> None:
    """This machine's hardware profile and GPU class (the label every result carries)."""
    from harness.hw.calibration import judge_calibration, run_calibration_locally
    from harness.hw.context import detect_hardware

    ctx = detect_hardware()
    doc = {"class": ctx.cls.to_dict(), "peak_flops_for_runs": ctx.peak_flops_env, "nvml": ctx.profile.nvml,
           "profile": ctx.profile.to_dict()}
    if calibrate:
        cal = run_calibration_locally()
        doc["calibration"] = {"result": cal.to_dict() if cal else None,
                              "judgement": judge_calibration(cal, ctx.cls).to_dict()}
    if as_json:
        emit_json(doc)
        return
    host = ctx.profile.host
    typer.echo(f"class      {ctx.cls.label}" + ("" if ctx.cls.known else "  (not in the class table)"))
    typer.echo(f"peak       {ctx.peak_flops_env} FLOP/s (bf16 dense, passed to runs as HARNESS_PEAK_FLOPS)")
    typer.echo(f"nvml       {ctx.profile.nvml}")
    for g in ctx.profile.gpus:
        typer.echo(f"gpu        {g.index}: {g.name} {g.uuid} driver {g.driver_version} cc {g.compute_capability}")
    typer.echo(f"host       {host.cpu_model} · {host.cpu_usable_cores} cores · {host.ram_bytes / 2**30:.0f} GiB · "
               f"{host.os} · kernel {host.kernel}")
    if ctx.cls.note:
        typer.echo(f"note       {ctx.cls.note}")
    if calibrate:
        c = doc["calibration"]
        r = c["result"] or {}
        typer.echo(f"calibration matmul {r.get('matmul_flops', 0) / 1e12:.2f} TFLOP/s ({r.get('dtype')}) · "
                   f"copy {r.get('mem_bw_bytes_s', 0) / 1e9:.1f} GB/s · {c['judgement']['note'] or ''}")


@app.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """Check everything a run needs (Docker, NVIDIA runtime, NVML, GPUs, images, data, disk) and how to fix it."""
    from harness import paths
    from harness.doctor import all_ok, format_checks, run_checks

    benches = load_benchmarks()
    checks = run_checks(image_tags=("harness-cpu:latest", "harness-cuda:latest"),
                        benchmarks=[(b.name, paths.data_dir(b.name) / "manifest.json") for b in benches.values()],
                        disk_paths=[paths.runs_dir().parent, paths.cache_dir().parent])
    if as_json:
        emit_json([c.to_dict() for c in checks])
    else:
        typer.echo(format_checks(checks))
    raise typer.Exit(EXIT_OK if all_ok(checks) else EXIT_FAILED)


image_app = typer.Typer(help="Run images: build them (offline from Debian packages for cpu) and show them.",
                        no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(kind: str = typer.Argument(..., help="cpu, cuda, or base (the Debian base alone; root + "
                                           "debootstrap)."),
                offline: Optional[bool] = typer.Option(None, "--offline/--online",
                                                       help="Offline: no registry, wheels downloaded on the host "
                                                            "(default: offline for cpu, online for cuda)."),
                base: Optional[str] = typer.Option(None, "--base", help="Base image (offline cuda: "
                                                   "harness-base:bookworm-dev)."),
                dev: bool = typer.Option(False, "--dev", help="base: the flavour with gcc and python3-dev."),
                force: bool = typer.Option(False, "--force", help="Ignore the layer cache."),
                as_json: bool = JsonOpt) -> None:
    """Build and tag a run image and record its id (every result records the image it ran in)."""
    from harness.backends.docker.images import ImageError, build_base, build_image

    if kind not in ("cpu", "cuda", "base"):
        fail(f"image kind must be cpu, cuda or base, not {kind!r}")
    progress = lambda m: err.print(m, markup=False, highlight=False)  # noqa: E731
    try:
        if kind == "base":
            info = build_base(dev=dev, progress=progress)
        else:
            info = build_image(kind, offline=offline, base_image=base, force=force, progress=progress)
    except ImageError as e:
        fail(str(e), EXIT_FAILED)
    if as_json:
        emit_json(info.to_json())
    else:
        typer.echo(f"{info.tag} {info.id}")


@image_app.command("ensure")
def image_ensure(kind: str = typer.Argument("cpu", help="cpu or cuda.")) -> None:
    """Build the image only when it is missing or its recipe changed."""
    from harness.backends.docker.images import ImageError, ensure_image

    if kind not in ("cpu", "cuda"):
        fail(f"image kind must be cpu or cuda, not {kind!r}")
    try:
        info = ensure_image(kind, progress=lambda m: err.print(m, markup=False, highlight=False))
    except ImageError as e:
        fail(str(e), EXIT_FAILED)
    typer.echo(f"{info.tag} {info.id}")


@image_app.command("show")
def image_show(kind: Optional[str] = typer.Argument(None, help="cpu, cuda or base (default: all three)."),
               as_json: bool = JsonOpt) -> None:
    """The local run images, their labels, and whether they are stale (exit 1 when one is absent)."""
    from harness.backends.docker.images import ImageError, connect, show_images
    from harness.images import BASE_KIND, KINDS, image_tag

    kinds = [BASE_KIND, *KINDS]
    if kind is not None and kind not in kinds:
        fail(f"image kind must be one of {', '.join(kinds)}, not {kind!r}")
    try:
        shown = show_images(connect(), [kind] if kind else kinds)
    except ImageError as e:
        fail(str(e), EXIT_FAILED)
    if as_json:
        emit_json(shown)
    else:
        for k, doc in shown.items():
            if doc is None:
                typer.echo(f"{image_tag(k)}: absent")
            else:
                stale = f"stale: {doc['stale']}" if doc["stale"] else "matches this checkout"
                typer.echo(f"{doc['tag']} {doc['id']} ({stale})")
    raise typer.Exit(EXIT_FAILED if any(doc is None for doc in shown.values()) else EXIT_OK)


@app.command()
def janitor() -> None:
    """Record runs whose harness died (status aborted) and remove leftover harness containers (by label).
    Run it when no harness run is in progress."""
    from harness.backends.docker import client as docker_client, janitor as sweep

    recovered = recover_orphans()  # the callback already did; a second pass finds nothing new
    if not docker_client.docker_available():
        fail("Docker daemon not reachable: start dockerd (see .ci/docker-up)")
    removed = sweep()
    typer.echo("\n".join(removed) if removed else "nothing to remove")
    if not recovered:
        typer.echo("no run left without a record")
