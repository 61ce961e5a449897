"""The review job behind the portal, without HTTP: registering objects, handing out tasks, rendering them,
recording answers, consolidating through the post-labeling handler.

`ReviewService` is what `qa_workflow.review.portal.app` calls; tests and benchmarks can drive it directly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qa_workflow import storage
from qa_workflow.confirmations.adjust import seconds_on_task
from qa_workflow.contract import ContractError, SegqaError, parse_decisions, utc_iso
from qa_workflow.review.portal import labeling, signing
from qa_workflow.review.portal.db import Assignment, JobConfig, PortalDB, Reviewer, SubmitOutcome

__all__ = ["PortalSettings", "ReviewService", "default_portal_dir", "default_store_uri", "AnswerRejected",
           "TooSoon"]

log = logging.getLogger("segqa.portal")

#: Ground Truth's default ``TaskAvailabilityLifetimeInSeconds`` for a private workforce is up to 10 days.
DEFAULT_TASK_LIFETIME_S = 10 * 24 * 3600
DEFAULT_TASK_TIME_LIMIT_S = 3600
DEFAULT_URL_TTL_S = 600
DEFAULT_SESSION_TTL_S = 14 * 24 * 3600
DEFAULT_LINK_TTL_S = 7 * 24 * 3600
MAX_ANSWER_BYTES = 1_000_000

_CROWD_SCRIPT_RE = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*[\"']https://assets\.crowd\.aws/crowd-html-elements\.js[\"'][^>]*>\s*</script>",
    re.IGNORECASE)
_SCRIPT_OPEN_RE = re.compile(r"<script(?=[\s>])", re.IGNORECASE)


def default_portal_dir() -> Path:
    """``$SEGQA_PORTAL_DIR`` or ``~/.segqa/portal``: accounts, sessions, job state and the signing key."""
    env = os.environ.get("SEGQA_PORTAL_DIR")
    return Path(env) if env else Path.home() / ".segqa" / "portal"


def default_store_uri(portal_dir: Path) -> str:
    """``$SEGQA_STORE`` or an SQLite store next to the portal's own state."""
    return os.environ.get("SEGQA_STORE") or f"sqlite:///{(portal_dir / 'store.sqlite').resolve()}"


class AnswerRejected(SegqaError):
    """A submitted answer that does not fit its task (the HTTP layer answers 422 with this message)."""


class TooSoon(AnswerRejected):
    """An answer that came sooner after its task page was served than the minimum viewing time of its cards."""

    def __init__(self, message: str, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


@dataclass
class PortalSettings:
    portal_dir: Path
    round_uri: str
    store_uri: str | None = None
    job_name: str | None = None
    reviewers_per_object: int = 3
    task_time_limit_s: float = DEFAULT_TASK_TIME_LIMIT_S
    task_lifetime_s: float = DEFAULT_TASK_LIFETIME_S
    url_ttl_s: float = DEFAULT_URL_TTL_S
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    template_uri: str | None = None
    label_attribute_name: str = labeling.DEFAULT_LABEL_ATTRIBUTE
    sweep_interval_s: float = 2.0
    consolidate_in_background: bool = True
    clock: Callable[[], float] = field(default=time.time)
    public_url: str | None = None  # scheme://host[:port] browsers use (behind a reverse proxy)
    #: Milliseconds each card must be shown (the template's data-min-view-ms, rewritten); None: the template's own.
    min_view_ms: int | None = None
    #: Jobs whose voters are not given a batch with a mask they voted on there (an escalation job's second opinion
    #: must come from other people). None: the source job of an escalation manifest (`rounds.escalating`), else none.
    exclude_voters_of: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.portal_dir = Path(self.portal_dir)
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
                    or parts.query or parts.fragment:
                raise SegqaError(f"--public-url must be the origin browsers use, e.g. https://review.example.org "
                                 f"(scheme and host, no path); got {self.public_url!r}")
            # the origin as browsers send it: lower-case scheme and host, no default port
            host, port = (parts.hostname or "").lower(), parts.port
            default = {"http": 80, "https": 443}[parts.scheme.lower()]
            self.public_url = f"{parts.scheme.lower()}://{host}" + (f":{port}" if port and port != default else "")
        if not 1 <= int(self.reviewers_per_object) <= 50:
            raise SegqaError(f"--reviewers-per-object must be between 1 and 50, got {self.reviewers_per_object}")
        if self.task_time_limit_s < 30:
            raise SegqaError(f"--task-time-limit must be at least 30 seconds, got {self.task_time_limit_s:g}")
        if self.task_lifetime_s < self.task_time_limit_s:
            raise SegqaError("--task-lifetime must be at least the task time limit")
        if self.min_view_ms is not None and not 0 <= self.min_view_ms <= 60_000:
            raise SegqaError(f"--min-view-ms must be between 0 and 60000 milliseconds, got {self.min_view_ms}")


def _load_key(portal_dir: Path) -> bytes:
    """The portal's signing key (created once, mode 0600): image URLs survive a restart."""
    path = portal_dir / "secret.key"
    if not path.exists():  # another process may create it meanwhile: then theirs is kept
        storage.atomic_create_bytes(path, secrets.token_bytes(32), mode=0o600)
    key = path.read_bytes()
    if len(key) < 32:
        raise SegqaError(f"{path}: signing key is damaged (expected 32 bytes); delete it to make a new one")
    return key


def open_portal_db(portal_dir: Path) -> PortalDB:
    return PortalDB(Path(portal_dir) / "portal.sqlite")


def validate_answer(task_input: dict[str, Any], answer: Any) -> None:
    """A worker answer must be a JSON object; for a batch task its ``decisions`` must decide every item of
    the batch exactly once (matched by item_id). Raises AnswerRejected with the reason."""
    if not isinstance(answer, dict):
        raise AnswerRejected("the answer must be a JSON object (the form output)")
    if task_input.get("kind") == "adjust":
        _validate_adjust_answer(task_input, answer)
        return
    items = task_input.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) and "item_id" in i for i in items):
        return
    if "decisions" not in answer:
        raise AnswerRejected("the answer has no 'decisions' field")
    try:
        decisions = parse_decisions(answer["decisions"])
    except ContractError as exc:
        raise AnswerRejected(str(exc)) from None
    expected = {i["item_id"] for i in items}
    got = {d.item_id for d in decisions}
    unknown = sorted(got - expected)
    missing = sorted(expected - got)
    if unknown:
        raise AnswerRejected(f"decisions name item(s) not in this batch: {', '.join(unknown[:5])}")
    if missing:
        raise AnswerRejected(f"{len(missing)} item(s) have no decision, e.g. {missing[0]}")


def _validate_adjust_answer(task_input: dict[str, Any], answer: dict[str, Any]) -> None:
    """An adjust answer must decode, as the post-labeling step will, to a label map of the slice's size: a
    reviewer hears at once what is wrong rather than the object failing later."""
    from qa_workflow.confirmations.adjust import model_label_map, read_worker_correction

    try:
        width, height, _ = model_label_map(storage.read_bytes(str(task_input["mask_uri"])), where="the model mask")
        read_worker_correction("you", answer, width, height)
    except (ContractError, SegqaError, KeyError) as exc:
        raise AnswerRejected(f"the corrected mask cannot be used: {exc}") from None


#: The largest task asset the portal serves (a 176 x 208 overlay is ~30 KB; whole-slide PNGs stay far below).
MAX_ASSET_BYTES = 32 * 1024 * 1024


class ReviewService:
    """One labeling job served by the portal."""

    def __init__(self, settings: PortalSettings) -> None:
        self.settings = settings
        self.clock = settings.clock
        self.portal_dir = settings.portal_dir
        self.portal_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_portal_db(self.portal_dir)
        self.key = _load_key(self.portal_dir)
        self.store_uri = settings.store_uri or default_store_uri(self.portal_dir)
        self.manifest_uri = labeling.resolve_manifest(settings.round_uri)
        self.asset_root = self._asset_root()  # every task asset is checked against it
        name = settings.job_name or labeling.job_name_for(self.manifest_uri)
        self.job_cfg = JobConfig(
            name=labeling.check_job_name(name), arn=labeling.labeling_job_arn(name),
            manifest_uri=self._canonical(self.manifest_uri),
            reviewers_per_object=int(settings.reviewers_per_object),
            task_time_limit=float(settings.task_time_limit_s), task_lifetime=float(settings.task_lifetime_s),
            label_attribute_name=settings.label_attribute_name)
        template_uri = settings.template_uri or str(self._default_template())
        self.template_uri = template_uri
        from qa_workflow.review import templates as templating

        text = storage.read_text(template_uri)
        if settings.min_view_ms is not None:
            text = templating.with_min_view_ms(text, int(settings.min_view_ms), template_uri)
        #: What the page's script enforces per card, and `check_viewing_time` per task: one setting.
        self.min_view_ms = templating.min_view_ms(text, template_uri)
        self.template_text = self._prepare_template(text)
        self.job_dir = self.portal_dir / "jobs" / self.job_cfg.name
        self.job_id: int = -1
        self._known_assets: set[str] = set()
        self._assets_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_after: dict[int, float] = {}
        self._consolidate_lock = threading.Lock()
        self._env_before: str | None = None
        # When each active task's page was last served (assignment id -> time), for `check_viewing_time`. Kept in
        # memory, so a page view stays a read (no write transaction and fsync each). After a restart an unknown
        # task counts from when it was handed out (its page cannot have been served sooner).
        self._served: dict[int, float] = {}
        self._served_lock = threading.Lock()
        self._started_at = float("inf")  # set by `start`
        if settings.exclude_voters_of is not None:
            self.exclude_voters_of = tuple(settings.exclude_voters_of)
        else:
            from qa_workflow.rounds.escalating import source_job_of

            source = source_job_of(self.manifest_uri)
            self.exclude_voters_of = () if source is None else (source,)

    # -- set-up ------------------------------------------------------------------------------------------

    def _default_template(self) -> Path:
        """The template of the manifest's kind of task: the adjust editor for adjust tasks, else the review
        screen (a manifest holds one kind; the first object decides)."""
        from qa_workflow.review import templates as templating

        try:
            first = labeling.read_manifest(self.manifest_uri)[0]
            ref = first.get("source-ref")
            task = storage.read_json(ref) if isinstance(ref, str) else json.loads(first.get("source", "{}"))
            return templating.template_for(task if isinstance(task, dict) else {})
        except (SegqaError, ValueError, IndexError, OSError):
            return templating.MASK_REVIEW_TEMPLATE  # pre-labeling will report what is wrong with the object

    @staticmethod
    def _canonical(uri: str) -> str:
        if storage.is_s3(uri):
            return uri
        return str(storage.local_path(uri).resolve())

    def _prepare_template(self, text: str) -> str:
        """Ground Truth loads its Crowd HTML Elements from assets.crowd.aws; the portal serves its own
        (the page head loads /static/crowd-elements.js), so that tag goes. Every <script> of the template
        gets a per-process marker that becomes the response's CSP nonce: scripts injected through data
        (which autoescape already prevents) would not carry it and would not run."""
        from qa_workflow.review.templates import expand_includes

        self._nonce_mark = "segqa-nonce-" + secrets.token_hex(16)
        text = _CROWD_SCRIPT_RE.sub("", expand_includes(text))
        return _SCRIPT_OPEN_RE.sub(f'<script nonce="{self._nonce_mark}"', text)

    @property
    def started(self) -> bool:
        return self.job_id >= 0

    def start(self, on_object: Callable[[int, int], None] | None = None) -> None:
        """Create or reopen the job, run pre-labeling for new manifest lines, recover unfinished work
        (objects that had all their answers but were not consolidated when the server stopped)."""
        if self.started:
            return
        self._env_before = os.environ.get("SEGQA_STORE")
        os.environ["SEGQA_STORE"] = self.store_uri  # what the Lambdas' environment would carry
        now = self.clock()
        self._started_at = now
        job_id = self.db.ensure_job(self.job_cfg, now)
        self.register_objects(job_id, on_object)
        self._check_template(job_id)
        self.exclude_earlier_voters(job_id)
        self.job_id = job_id
        self.db.sweep(self.job_id, now)
        if self.settings.consolidate_in_background:
            self._thread = threading.Thread(target=self._run, name="segqa-consolidator", daemon=True)
            self._thread.start()
        else:
            self.consolidate_ready()

    def stop(self) -> None:
        """Stop the consolidator (finishing the round it is in) and close the database."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.db.close()
        if self.started:
            if self._env_before is None:
                os.environ.pop("SEGQA_STORE", None)
            else:
                os.environ["SEGQA_STORE"] = self._env_before

    def _check_template(self, job_id: int) -> None:
        """Render the template once with a real task input, so a Liquid error stops `serve` at start with one
        clear message instead of failing every task page later."""
        from qa_workflow.review import templates as templating

        row = self.db.conn().execute("SELECT task_input FROM objects WHERE job_id = ? AND task_input IS NOT NULL "
                                     "ORDER BY object_id LIMIT 1", (job_id,)).fetchone()
        if row is not None:
            templating.render_task(self.template_text, json.loads(row["task_input"]), grant_read_access=lambda u: u,
                                   template_name=self.template_uri)

    def register_objects(self, job_id: int, on_object: Callable[[int, int], None] | None = None) -> int:
        """Pre-label every manifest line not registered yet (the same handler Ground Truth would call).
        A failing object is recorded as failed with its error; it never renders a half task."""
        objects = labeling.read_manifest(self.manifest_uri)
        known = self.db.known_objects(job_id)
        added = 0
        for object_id, data_object in enumerate(objects):
            if object_id in known:
                if json.loads(known[object_id]) != data_object:
                    raise SegqaError(f"{self.manifest_uri}, line {object_id + 1}: changed since job "
                                     f"{self.job_cfg.name!r} started; serve the new manifest under another --job-name")
                continue
            event = labeling.pre_labeling_event(self.job_cfg.arn, data_object)
            try:
                out = labeling.call_pre_labeling(event)
            except Exception as exc:  # Ground Truth marks the object failed, whatever the error
                log.warning("pre-labeling failed for object %s (%s): %s", object_id, data_object, exc)
                self.db.add_object(job_id, object_id, data_object, now=self.clock(), error=str(exc)[:2000])
            else:
                self.db.add_object(job_id, object_id, data_object, now=self.clock(),
                                   task_input=out["taskInput"],
                                   human_required=bool(out.get("isHumanAnnotationRequired", True)))
            added += 1
            if on_object is not None:
                on_object(object_id + 1, len(objects))
        return added

    def exclude_earlier_voters(self, job_id: int) -> int:
        """Keep the people who voted on a batch's masks in the jobs of ``exclude_voters_of`` from being given that
        batch (the store's votes, read at every start); returns how many (batch, person) pairs are new."""
        if not self.exclude_voters_of:
            return 0
        from qa_workflow.confirmations.store import open_store
        from qa_workflow.rounds.escalating import earlier_voters

        store = open_store(self.store_uri, create=False)
        try:
            voters = earlier_voters(store, self.exclude_voters_of)
        finally:
            store.close()
        excluded: dict[int, set[str]] = {}
        for row in self.db.conn().execute("SELECT object_id, task_input FROM objects WHERE job_id = ? "
                                          "AND task_input IS NOT NULL", (job_id,)):
            items = json.loads(row["task_input"]).get("items")
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict):
                    excluded.setdefault(row["object_id"], set()).update(voters.get(str(item.get("item_id")), ()))
        return self.db.exclude(job_id, excluded, "voted in " + ", ".join(self.exclude_voters_of))

    # -- tasks -------------------------------------------------------------------------------------------

    def next_task(self, reviewer: Reviewer) -> Assignment | None:
        return self.db.next_assignment(self.job_id, reviewer.id, self.clock())

    def task_for(self, reviewer: Reviewer, assignment_id: int) -> Assignment | None:
        """The reviewer's own assignment in this job, or None (another reviewer's task is never reachable)."""
        a = self.db.assignment(assignment_id)
        if a is None or a.job_id != self.job_id or a.reviewer_id != reviewer.id:
            return None
        return a

    def task_input(self, assignment: Assignment) -> dict[str, Any]:
        row = self.db.object_row(self.job_id, assignment.object_id)
        assert row is not None, "an assignment always refers to an object of its job"
        return json.loads(row["task_input"])

    def grant_for(self, reviewer: Reviewer, until: float | None = None) -> AssetGrants:
        """A ``grant_read_access`` for one page view: URI -> ``/assets/<signed token>``, valid for ``url_ttl_s``
        or until ``until`` (the task's end), whichever is later: a reviewer who takes the whole time limit
        still sees the images. Each page view signs anew."""
        now = self.clock()
        ttl = max(self.settings.url_ttl_s, (until or now) - now)
        return AssetGrants(self, reviewer.id, now, ttl)

    def _remember(self, new: dict[str, str]) -> None:
        if new:
            self.db.remember_assets(new)
            with self._assets_lock:
                self._known_assets.update(new)

    def render(self, reviewer: Reviewer, assignment: Assignment, nonce: str) -> str:
        """The task's HTML: the job's Liquid template rendered with the pre-labeling handler's taskInput."""
        from qa_workflow.review import templates as templating

        grant = self.grant_for(reviewer, until=assignment.expires_at)
        html = templating.render_task(self.template_text, self.task_input(assignment), grant_read_access=grant,
                                      template_name=os.path.basename(self.template_uri))
        grant.flush()
        with self._served_lock:
            self._served[assignment.id] = self.clock()
        return html.replace(self._nonce_mark, nonce)

    def asset(self, token: str, reviewer: Reviewer) -> tuple[bytes, str, int]:
        """Bytes, content type and seconds left for a signed asset token of this reviewer.
        Raises signing.InvalidToken (or ExpiredToken) for anything that is not exactly what was granted."""
        grant = signing.verify_asset(self.key, token, now=self.clock())
        if grant.reviewer_id != reviewer.id:
            raise signing.InvalidToken("asset URL issued to another reviewer")
        uri = self.db.asset_uri(grant.digest)
        if uri is None:
            raise signing.InvalidToken("unknown asset")
        location, content_type = self._servable(uri)
        try:
            data = storage.read_bytes(location)
        except SegqaError as exc:
            raise FileNotFoundError(str(exc)) from None
        return data, content_type, max(0, int(grant.expires_at - self.clock()))

    def _asset_root(self) -> str:
        """The folder the job's assets must lie in: the round folder that `segqa batch` wrote (the manifest's
        folder; for an adjust or escalation manifest, ``<round>/adjust|escalate/<job>/``, the round above it).
        Computed once, at start (`asset_root`)."""
        manifest = self.manifest_uri
        if storage.is_s3(manifest):
            parts = manifest.rstrip("/").split("/")[:-1]
            if len(parts) >= 5 and parts[-2] in ("adjust", "escalate"):
                parts = parts[:-2]
            return "/".join(parts)
        folder = storage.local_path(manifest).resolve().parent
        if folder.parent.name in ("adjust", "escalate"):
            folder = folder.parent.parent
        return str(folder)

    def _servable(self, uri: str) -> tuple[str, str]:
        """(what to read, content type) for an asset URI named by a task, or signing.InvalidToken: an image file
        (by the extension of the path itself, never of a query or fragment) inside `asset_root`, no larger than
        MAX_ASSET_BYTES. A batch JSON is data, not code: it must not make the portal serve other files."""
        root = self.asset_root
        if storage.is_s3(uri):
            location = uri
            if "?" in uri or "#" in uri or not uri.startswith(root.rstrip("/") + "/") or "/../" in uri:
                raise signing.InvalidToken("asset outside the round folder")
            ext = os.path.splitext(uri)[1].lower()
        else:
            parts = urlsplit(uri)
            if uri.startswith("file://") and (parts.query or parts.fragment):
                raise signing.InvalidToken("asset URI with a query or fragment")
            try:
                path = storage.local_path(uri).resolve()
            except (SegqaError, OSError):
                raise signing.InvalidToken("not a local asset") from None
            if not path.is_relative_to(root):
                raise signing.InvalidToken("asset outside the round folder")
            if not path.is_file() or path.stat().st_size > MAX_ASSET_BYTES:
                raise FileNotFoundError(f"{path}: not a file of at most {MAX_ASSET_BYTES} bytes")
            location, ext = str(path), path.suffix.lower()
        content_type = signing.IMAGE_TYPES.get(ext)
        if content_type is None:
            raise signing.InvalidToken("not an image asset")
        return location, content_type

    def submit(self, reviewer: Reviewer, assignment: Assignment, answer: Any) -> SubmitOutcome:
        """Validate and durably record one answer; wake the consolidator when the object is complete."""
        task_input = self.task_input(assignment)
        validate_answer(task_input, answer)
        if assignment.status == "active":  # an answer already recorded is a duplicate whatever its timing
            self.check_viewing_time(assignment, task_input)
        if seconds_on_task(answer.get("seconds")) is None:
            # Time on task, measured by the portal: from handing out the task to this submit. Both templates
            # measure it themselves, leaving out time the tab was hidden, and are believed instead.
            answer = {**answer, "seconds": f"{max(0.0, self.clock() - assignment.assigned_at):.1f}"}
        try:
            content = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
            size = len(content.encode("utf-8"))
        except (UnicodeEncodeError, RecursionError, ValueError):  # a lone surrogate, absurd nesting
            raise AnswerRejected("the answer holds text that is not valid Unicode, or is nested too deeply") from None
        if size > MAX_ANSWER_BYTES:
            raise AnswerRejected(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        outcome = self.db.submit(assignment, reviewer.worker_id, content, self.clock())
        with self._served_lock:  # no answer to this assignment is checked again
            self._served.pop(assignment.id, None)
        if outcome.object_ready:
            self._wake.set()
        return outcome

    def check_viewing_time(self, assignment: Assignment, task_input: dict[str, Any]) -> None:
        """Refuse (TooSoon) an answer that comes sooner after the task page was last served than the task's cards
        times the minimum viewing time (`min_view_ms`, the template's ``data-min-view-ms``): the template's
        script asks for it per card, this holds whatever sent the answer."""
        items = task_input.get("items")
        cards = len(items) if isinstance(items, list) else 0
        needed = cards * self.min_view_ms / 1000
        if needed <= 0:
            return
        with self._served_lock:
            served = self._served.get(assignment.id)
        if served is None and assignment.assigned_at >= self._started_at:
            raise TooSoon("this task's page was never shown to you: open the task, look at each mask, then submit",
                          needed)
        served = assignment.assigned_at if served is None else served  # handed out before this process started
        elapsed = max(0.0, self.clock() - served)
        if elapsed < needed:
            wait = needed - elapsed
            raise TooSoon(f"submitted {elapsed:.1f} s after the task was shown; its {cards} masks need at least "
                          f"{needed:g} s ({self.min_view_ms / 1000:g} s each). Look at each mask, then submit again "
                          f"in {wait:.1f} s. Nothing was recorded.", wait)

    def release(self, assignment: Assignment) -> bool:
        return self.db.release(assignment, self.clock())

    # -- consolidation -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.db.sweep(self.job_id, self.clock())
                self.consolidate_ready()
            except Exception:  # the thread must outlive one bad round; the error is logged
                log.exception("consolidation round failed")
            self._wake.wait(self.settings.sweep_interval_s)
            self._wake.clear()

    def consolidate_ready(self, batch_size: int = 25) -> int:
        """Send every ready object (all answers in, or lifetime over) to the post-labeling handler, several
        objects per invocation as Ground Truth does. Idempotent: the handler writes each vote at most once,
        so re-sending an object after a crash changes nothing. Returns how many objects completed."""
        done = 0
        with self._consolidate_lock:
            while True:
                now = self.clock()
                rows = [r for r in self.db.ready_objects(self.job_id, limit=500)
                        if self._retry_after.get(r["object_id"], 0) <= now][:batch_size]
                if not rows:
                    return done
                ids = [r["object_id"] for r in rows]
                responses: dict[int, list[tuple[str, dict[str, Any]]]] = {i: [] for i in ids}
                for resp in self.db.responses(self.job_id, ids):
                    responses[resp["object_id"]].append((resp["worker_id"], json.loads(resp["content"])))
                entries = [labeling.annotation_entry(r["object_id"], json.loads(r["data_object"]),
                                                     responses[r["object_id"]]) for r in rows]
                payload_uri = labeling.write_annotations_file(self.job_dir / "annotations", entries)
                event = labeling.post_labeling_event(self.job_cfg.arn, self.job_cfg.label_attribute_name, payload_uri)
                try:
                    result = labeling.call_post_labeling(event, [str(i) for i in ids])
                except Exception as exc:  # recorded on the objects; retried later
                    log.warning("post-labeling failed for objects %s: %s", ids, exc)
                    self.db.mark_consolidation_error(self.job_id, ids, f"{type(exc).__name__}: {exc}")
                    for i in ids:
                        self._retry_after[i] = now + 60
                    continue
                self.db.mark_consolidated(self.job_id, {i: result[str(i)] for i in ids}, self.clock())
                for i in ids:
                    self._retry_after.pop(i, None)
                done += len(ids)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until no object is ready-but-unconsolidated (tests, benchmarks). True if idle in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.db.ready_objects(self.job_id, limit=1):
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    # -- reporting ---------------------------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        out = self.db.progress(self.job_id, self.clock())
        out["store"] = self.store_uri
        out["excluded_voters_of"] = list(self.exclude_voters_of)
        return out

    def worker_responses(self) -> list[dict[str, Any]]:
        """Per object, its answers in Ground Truth's worker-response shape, and the consolidation result."""
        progress = {o["object_id"]: o for o in self.db.progress(self.job_id, self.clock())["objects"]}
        by_object: dict[int, list[dict[str, Any]]] = {}
        for r in self.db.responses(self.job_id):
            a = self.db.assignment(r["assignment_id"])
            by_object.setdefault(r["object_id"], []).append({
                "workerId": r["worker_id"],
                "answerContent": json.loads(r["content"]),
                "acceptanceTime": _iso(a.assigned_at if a else None),
                "submissionTime": _iso(r["submitted_at"]),
                "timeSpentInSeconds": round(r["submitted_at"] - a.assigned_at, 3) if a else None,
            })
        out = []
        for object_id, answers in sorted(by_object.items()):
            row = self.db.object_row(self.job_id, object_id)
            assert row is not None, "every response refers to an object of its job"
            out.append({"datasetObjectId": str(object_id), "dataObject": json.loads(row["data_object"]),
                        "status": progress[object_id]["status"], "answers": answers,
                        "consolidatedAnnotation": json.loads(row["consolidation"]) if row["consolidation"] else None})
        return out

    def object_detail(self, object_id: int) -> dict[str, Any] | None:
        row = self.db.object_row(self.job_id, object_id)
        if row is None:
            return None
        answers = []
        for r in self.db.responses(self.job_id, [object_id]):
            content = json.loads(r["content"])
            try:
                decisions = [d.to_json() for d in parse_decisions(content.get("decisions", "[]"))]
            except (ContractError, AttributeError):
                decisions = []
            answers.append({"reviewer": r["reviewer_name"], "worker_id": r["worker_id"],
                            "submitted_at": _iso(r["submitted_at"]), "decisions": decisions, "content": content})
        return {"object_id": object_id, "status": row["status"], "batch_id": row["batch_id"],
                "class_name": row["class_name"], "data_object": json.loads(row["data_object"]),
                "error": row["error"], "consolidation_error": row["consolidation_error"],
                "consolidation": json.loads(row["consolidation"]) if row["consolidation"] else None,
                "answers": answers}


class AssetGrants:
    """The portal's ``grant_read_access`` for one page view: signs each URI for one reviewer, and remembers
    (``flush``) which asset digest stands for which URI, so that ``/assets/<token>`` can be resolved later."""

    def __init__(self, service: ReviewService, reviewer_id: int, now: float, ttl_s: float) -> None:
        self._service, self._reviewer_id, self._now, self._ttl_s = service, reviewer_id, now, ttl_s
        self._new: dict[str, str] = {}

    def __call__(self, uri: str) -> str:
        if uri.startswith("data:"):
            return uri
        digest, token = signing.sign_asset(self._service.key, uri, self._reviewer_id, self._ttl_s, now=self._now)
        if digest not in self._service._known_assets:  # a read of the service's cache
            self._new[digest] = uri
        return f"/assets/{token}"

    def flush(self) -> None:
        self._service._remember(self._new)
        self._new = {}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return utc_iso(t, "milliseconds")
