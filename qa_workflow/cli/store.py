"""The confirmation store (issue #5): init, export to the review-record CSV, summary. Thin commands over
`qa_workflow.confirmations.store`; see docs/review-contract.md."""

from __future__ import annotations

import json

import typer

_STORE_HELP = "Store URI: sqlite:///<path> (sqlite:////abs/path.db) or dynamodb://<table>. Default: $SEGQA_STORE."


def _store_uri(store: str | None) -> str:
    from qa_workflow.confirmations.store import store_uri_from_env

    return store if store else store_uri_from_env()


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="The confirmation store (SQLite or DynamoDB).", no_args_is_help=True)
    app.add_typer(store_app, name="store")

    @store_app.command("init")
    def init_(store: str | None = typer.Option(None, "--store", "-s", help=_STORE_HELP)) -> None:
        """Create the store: the SQLite schema, or the DynamoDB table and its indexes (idempotent)."""
        from qa_workflow.confirmations.store import open_store

        st = open_store(_store_uri(store))
        st.init()
        typer.echo(f"store ready: {st.uri}")

    @store_app.command("export")
    def export_(
        out: str = typer.Option(..., "--out", "-o", help="CSV to write (path, file:// or s3://)."),
        store: str | None = typer.Option(None, "--store", "-s", help=_STORE_HELP),
        round_: str | None = typer.Option(None, "--round", help="Only this round."),
        class_name: str | None = typer.Option(None, "--class", help="Only this tissue class."),
        corrections: bool = typer.Option(False, "--corrections", help="Write the corrections CSV instead "
                                         "(slice_id,round,job,workers,mask_uri,modified,seconds)."),
        job: str | None = typer.Option(None, "--job", help="With --corrections: only this adjust job."),
    ) -> None:
        """Write the review-record CSV (the input of `segqa analyze`), or with --corrections the corrected
        slices, atomically."""
        from qa_workflow import storage
        from qa_workflow.confirmations.export import (
            corrections_csv,
            export_corrections,
            export_review_records,
            review_records_csv,
        )
        from qa_workflow.confirmations.store import open_store
        from qa_workflow.contract import SegqaError

        st = open_store(_store_uri(store), create=False)
        if corrections:
            if class_name:
                raise SegqaError("--class does not apply to --corrections (a correction covers a whole slice)")
            crows = export_corrections(st, round=round_, job=job)
            if not crows:
                raise SegqaError(f"{st.uri}: no corrections" + (" matching the filters" if round_ or job else "")
                                 + "; nothing written")
            storage.write_text(out, corrections_csv(crows), content_type="text/csv; charset=utf-8")
            typer.echo(f"wrote {out}: {len(crows)} corrected slices")
            return
        if job:
            raise SegqaError("--job applies to --corrections only")
        rows, superseded = export_review_records(st, round=round_, class_name=class_name)
        if not rows:
            raise SegqaError(f"{st.uri}: no reviewed items"
                             + (" matching the filters" if round_ or class_name else "") + "; nothing written")
        storage.write_text(out, review_records_csv(rows), content_type="text/csv; charset=utf-8")
        note = f" ({superseded} older-round rows of re-reviewed items left out)" if superseded else ""
        typer.echo(f"wrote {out}: {len(rows)} reviewed items{note}")

    @store_app.command("summary")
    def summary_(
        store: str | None = typer.Option(None, "--store", "-s", help=_STORE_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Counts per tissue class and round: items, votes, accepted / rejected / split items."""
        from qa_workflow.confirmations.export import summarize
        from qa_workflow.confirmations.store import open_store

        st = open_store(_store_uri(store), create=False)
        groups = summarize(st)
        if as_json:
            typer.echo(json.dumps({"store": st.uri, "groups": groups}, indent=2))
            return
        if not groups:
            typer.echo(f"{st.uri}: no votes yet")
            return
        from rich.table import Table

        from qa_workflow.cli.console import console

        table = Table(title=f"{st.uri}")
        cols = ("class_name", "round", "items", "votes", "reviewers", "accept", "reject", "split")
        for c in cols:
            table.add_column(c, justify="left" if c in ("class_name", "round") else "right")
        totals = {c: 0 for c in cols[2:] if c != "reviewers"}
        for g in groups:
            table.add_row(*(str(g[c]) for c in cols))
            for c in totals:
                totals[c] += g[c]
        table.add_row("TOTAL", "", *(str(totals[c]) if c in totals else "" for c in cols[2:]), style="bold")
        console(stderr=False).print(table)
