"""Local commands: the catalog, the weights cache and export, on this machine's files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

import zoo
from server.cli.common import (
    JSON_OPTION,
    app,
    err,
    fmt,
    models_app,
    out,
    pct,
    print_json,
    weights_app,
)
from zoo.catalog import ModelSpec
from zoo.catalog import weights as weights_cache

WEIGHTS_DIR_OPTION = typer.Option(
    None, "--dir", help="Weights cache directory. Defaults to $KERAS_HOME/models."
)


@models_app.command("list")
def models(
    pattern: str = typer.Argument("*", help="fnmatch pattern, e.g. 'ResNet*'."),
    exclude: list[str] = typer.Option([], "--exclude", "-x", help="Pattern to leave out."),
    family: str | None = typer.Option(None, "--family", help="Only this family."),
    server: str | None = typer.Option(
        None, "--server", help="Ask a running server (host:port) what it serves instead."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the catalog: size, parameters, depth, accuracy and input of each model."""
    if server is not None:
        from server.cli.remote import served_models

        served_models(server, pattern, as_json)
        return
    specs = zoo.list_models(pattern, exclude=exclude, family=family)
    if as_json:
        print_json([s.to_dict() for s in specs])
        return
    table = Table(title=f"{len(specs)} models", box=box.SIMPLE_HEAD)
    for column in ("Model", "Family", "Input", "Preproc."):
        table.add_column(column, no_wrap=True)
    for column in ("MB", "Parameters", "Depth", "Param layers", "Top-1", "Top-5"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in specs:
        table.add_row(
            s.name,
            s.family,
            f"{s.input_size}x{s.input_size}",
            s.preprocessing.value,
            fmt(s.size_mb, "g"),
            f"{s.parameters:,}",
            fmt(s.depth_keras_table),
            fmt(s.depth_param_layers),
            pct(s.top1_accuracy),
            pct(s.top5_accuracy),
        )
    out.print(table)


def _info_rows(spec: ModelSpec) -> list[tuple[str, str]]:
    rows = [
        ("Name", spec.name),
        ("Family", spec.family),
        ("Constructor", f"keras.applications.{spec.constructor}"),
        ("Preprocess module", spec.keras_module),
        (
            "Input shape",
            f"{spec.input_shape} (minimum {spec.min_input_size}x{spec.min_input_size})",
        ),
        ("Preprocessing", spec.preprocessing.value),
        ("Channel order", spec.channel_order.value),
        ("Size", f"{fmt(spec.size_mb, 'g')} MB"),
        ("Parameters", f"{spec.parameters:,}"),
        ("Depth (Keras table)", fmt(spec.depth_keras_table)),
        ("Depth (param layers)", fmt(spec.depth_param_layers)),
        ("Top-1 / Top-5", f"{pct(spec.top1_accuracy)} / {pct(spec.top5_accuracy)}"),
        ("Classes", str(spec.num_classes)),
        ("License", spec.license),
    ]
    for label, wf in (("Weights", spec.weights_top), ("Weights (no top)", spec.weights_notop)):
        hashed = f"{wf.hash_algorithm} {wf.file_hash}" if wf.file_hash else "no published hash"
        rows.append((label, f"{wf.file_name} ({hashed})"))
    return rows


@app.command()
def info(name: str = typer.Argument(..., help="Model name."), as_json: bool = JSON_OPTION) -> None:
    """Everything the catalog knows about one model."""
    spec = zoo.get_spec(name)
    if as_json:
        print_json(spec.to_dict())
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in _info_rows(spec):
        table.add_row(key, value)
    out.print(table)


@weights_app.command("status")
def weights_status(
    pattern: str = typer.Argument("*", help="fnmatch pattern of model names."),
    directory: Path | None = WEIGHTS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Which models have their weights files present and verified."""
    rows = weights_cache.status(zoo.list_models(pattern), directory)
    if as_json:
        print_json(
            {
                "directory": str(weights_cache.cache_dir(directory)),
                "files": [r.to_dict() for r in rows],
            }
        )
        return
    table = Table(title=f"weights in {weights_cache.cache_dir(directory)}")
    for column in ("Model", "Top", "File", "State"):
        table.add_column(column)
    for r in rows:
        colour = {"verified": "green", "missing": "dim", "hash mismatch": "red"}.get(
            r.state.value, "yellow"
        )
        table.add_row(
            r.model,
            "yes" if r.include_top else "no",
            r.file.file_name,
            f"[{colour}]{r.state.value}[/]",
        )
    out.print(table)


@weights_app.command("seed")
def weights_seed(
    source: Path = typer.Argument(..., help="Directory holding Keras weights files."),
    directory: Path | None = WEIGHTS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Copy weights files into the cache, refusing any whose hash does not match."""
    report = weights_cache.seed(source, directory)
    if as_json:
        print_json(report.to_dict())
    else:
        for name in report.copied:
            out.print(f"verified and copied  {name}")
        for name in report.unverified:
            out.print(f"copied (no published hash to check)  {name}")
        for name in report.ignored:
            out.print(f"[dim]ignored (no catalog model uses it)  {name}[/]")
        if not (report.copied or report.unverified or report.refused):
            err.print(f"zoo: no weights files of catalog models found under {source}")
    for message in report.refused:
        err.print(f"zoo: refused {message}")
    if report.refused:
        raise typer.Exit(1)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(..., help="Model names or patterns."),
    directory: Path | None = WEIGHTS_DIR_OPTION,
) -> None:
    """Download weights (with and without top) with hash checks; needs internet."""
    specs: list[ModelSpec] = []
    for name in names:
        found = zoo.list_models(name) if any(c in name for c in "*?[") else [zoo.get_spec(name)]
        specs.extend(s for s in found if s not in specs)
    for path in weights_cache.fetch(specs, directory):
        out.print(f"ok  {path}")


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Catalog model name."),
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", "-r", help="Model repository directory."
    ),
    version: int | None = typer.Option(None, "--version", help="Version to write (default: next)."),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | none | PATH."),
    input_mode: str = typer.Option("uint8", "--input", help="uint8 (pixels) | float32 (bare)."),
    input_size: int | None = typer.Option(None, "--input-size", help="Square input size."),
    model_name: str | None = typer.Option(None, "--name", help="Name in the repository."),
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="For config.pbtxt."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export a catalog model to ONNX into the repository, verified against Keras."""
    from zoo.export.exporter import export_model

    spec = zoo.get_spec(name)
    with err.status(f"exporting {spec.name}", spinner="dots") as status:
        result = export_model(
            spec,
            repository,
            model_name=model_name,
            version=version,
            weights=weights,  # "imagenet", "none" or a path: export_model reads all three
            input=input_mode,
            input_shape=(input_size, input_size, 3) if input_size else None,
            max_batch_size=max_batch_size,
            progress=lambda _stage, message: status.update(f"{spec.name}: {message}"),
        )
    if as_json:
        print_json(result.to_dict())
        return
    v = result.verification
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("Model", f"{result.model} version {result.version}"),
        ("Path", str(result.path / "model.onnx")),
        ("Size", f"{result.onnx_bytes / 2**20:.1f} MiB"),
        ("Export time", f"{result.seconds:.1f} s"),
        ("Peak memory", f"{result.peak_rss_bytes / 2**30:.2f} GiB"),
        (
            "Check",
            f"max |logit diff| {v['max_abs_logit_diff']:.2e} <= {v['tolerance']:.2e}, "
            f"top-1 agreement {v['top1_agreement']:.0%} on {v['inputs']} inputs",
        ),
    ):
        table.add_row(key, value)
    out.print(table)
