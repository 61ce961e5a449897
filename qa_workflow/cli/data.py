"""Data: the atlas cohort, importers, previews (issue #2). Thin commands over training.cohort / importers /
preview; the libraries never print, progress bars live here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from qa_workflow.contract import SegqaError


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yields ``advance(label, total_)``, the callback of the cohort builder and the importers. No refresh
    thread: the cohort forks worker processes while it runs."""
    from qa_workflow.cli.console import console, progress

    with progress(console(), auto_refresh=False, field="last") as bar:
        task = bar.add_task(description, total=total, last="")

        def advance(label: str = "", total_: int | None = None) -> None:
            if total_ is not None:
                bar.update(task, total=total_)
            bar.update(task, advance=1, last=label)

        yield advance


def _summary(out: Path) -> str:
    from training.dataset import SPLITS, read_index, sites_of

    records = read_index(out)
    subjects = {s: len({r.subject for r in records if r.split == s}) for s in SPLITS}
    slices = {s: sum(1 for r in records if r.split == s) for s in SPLITS}
    parts = ", ".join(f"{s} {subjects[s]} ({slices[s]} slices)" for s in SPLITS)
    text = f"wrote {out}: {len({r.subject for r in records})} subjects, {len(records)} slice pairs; {parts}"
    sites = sites_of(records)
    if len(sites) > 1:
        per_site = {site: sorted({(r.split, r.subject) for r in records if r.site == site}) for site in sites}
        text += "; sites " + ", ".join(
            f"{site} {len(pairs)} ({', '.join(f'{sp} {sum(1 for x, _ in pairs if x == sp)}' for sp in SPLITS)})"
            for site, pairs in per_site.items())
    return text


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Build, import and preview datasets.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("synth")
    def synth_(
        subjects: int = typer.Option(..., "--subjects", "-n", min=1, help="Number of synthetic subjects."),
        out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
        slices: int = typer.Option(88, "--slices", min=1, help="Axial slices per subject (through the brain)."),
        workers: int | None = typer.Option(None, "--workers", min=1,
                                              help="Processes (default: one per core, at most one per subject)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
        sites: str | None = typer.Option(None, "--sites", help="Acquisition sites, comma-separated, e.g. A,B: the "
                                         "first labels the train split, the others are scanner shifts in pool, val "
                                         "and test (docs/data.md). Default: A only."),
    ) -> None:
        """Atlas cohort: synthetic T1 subjects with CSF/GM/WM labels from the MNI152 template (offline)."""
        from training.cohort import CohortParams, build_cohort, parse_sites

        params = CohortParams(n_slices=slices)
        site_names = parse_sites(sites)
        with _progress("synthesising subjects", subjects) as advance:
            build_cohort(out, subjects, seed=seed, params=params, workers=workers, overwrite=overwrite,
                         progress=advance, sites=site_names)
        typer.echo(_summary(out))

    @data_app.command("import")
    def import_(
        out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create."),
        oasis: Path | None = typer.Option(None, "--oasis", help="Folder with OASIS-1 Analyze volumes "
                                             "(T88 images *_t88_masked_gfc.img and FSL_SEG *_fseg.img)."),
        nifti: Path | None = typer.Option(None, "--nifti", help="Folder with NIfTI image + label volumes "
                                             "(<name>.nii[.gz] and <name>_seg/_label/_mask.nii[.gz])."),
        png: Path | None = typer.Option(None, "--png", help="Folder of <name>.png + <name>_mask.png."),
        seed: int = typer.Option(0, "--seed", help="Seed of the subject split assignment."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    ) -> None:
        """Import real data (OASIS-1 Analyze, NIfTI, or PNG pairs) into the dataset format."""
        from training import importers

        given = [(name, path) for name, path in (("oasis", oasis), ("nifti", nifti), ("png", png)) if path]
        if len(given) != 1:
            raise SegqaError("give exactly one of --oasis DIR, --nifti DIR or --png DIR")
        kind, src = given[0]
        func = {"oasis": importers.import_oasis, "nifti": importers.import_nifti, "png": importers.import_png}[kind]
        with _progress(f"importing {kind}", None) as advance:
            func(src, out, seed=seed, overwrite=overwrite, progress=advance)
        typer.echo(_summary(out))

    @data_app.command("preview")
    def preview_(
        dataset: Path = typer.Argument(..., help="Dataset folder (with index.csv)."),
        out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
        subjects: int = typer.Option(4, "--subjects", "-n", min=1, help="How many subjects (rows)."),
        levels: int = typer.Option(4, "--levels", min=1, help="How many slice levels per subject."),
        subject: list[str] | None = typer.Option(None, "--subject", help="Show these subjects (repeatable)."),
    ) -> None:
        """Contact sheet of slices with coloured mask overlays and a legend."""
        from training.preview import render_contact_sheet

        path = render_contact_sheet(dataset, out, n_subjects=subjects, n_levels=levels, subjects=subject)
        typer.echo(f"wrote {path}")
