"""``genlab report``: read the study's runs, compute each question's verdict, write the report in French and English
(Markdown + a self-contained HTML page each) and log it as a run tagged ``genlab.kind=report``; store each
question's view of its runs on its experiment, for MLflow's UI (genlab/ui.py), and link to it.

Read top to bottom: config -> validate -> collect (runs, histories, artifacts) -> verdicts -> views -> render ->
write -> log.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab import tags, ui
from genlab.checks import ConfigError, check, check_declared
from genlab.configs import ReportConfig, redacted
from genlab.entries import Context, Result

if TYPE_CHECKING:  # the heavy imports (pandas, scipy) wait until a report is built: `genlab --help` stays fast
    import pandas as pd

    from reports import verdicts as V

TEMPLATES = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("fr", "en")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def validate(cfg: ReportConfig) -> None:
    """ConfigError (one line) before anything is read or written."""
    check_declared(cfg)
    check(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", cfg.study)), "study", cfg.study, "a name of letters, digits, _ . -")
    check(cfg.ui_url == "auto" or bool(re.fullmatch(r"https?://[^\s\"'<>]+", cfg.ui_url)), "ui_url", cfg.ui_url,
          "auto or an http(s):// address")
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")
    out = Path(cfg.out)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    check(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK), "out", cfg.out, "a writable directory")


def ui_base(cfg: ReportConfig, tracking_uri: str) -> str:
    if cfg.ui_url != "auto":
        return cfg.ui_url.rstrip("/")
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else ui.DEFAULT


# ---------------------------------------------------------------- collecting what the runs hold

def collect(study: str, profile: str) -> dict[str, Any]:
    """The study's runs per question, and what each question reads besides them (histories, artifacts, pictures)."""
    from genlab import tracking
    from reports import gallery, questions, search_trials
    from reports import verdicts as V

    runs = tracking.search_runs(filter_string=tags.where(tags.STUDY, study))
    per_question, used, ignored = V.select_runs(runs, profile, questions.NAMES)
    search = search_trials.collect(runs, profile, StoreReader().children, _artifact_png)
    inputs, galleries = {}, {}
    for q in questions.QUESTIONS:
        inputs[q.name] = q.read(per_question[q.name], StoreReader())
        if q.reads_search:
            inputs[q.name]["search"] = search
        galleries.update(gallery.collect(per_question[q.name], q.galleries, _artifact_png))
    return {"runs": runs, "per_question": per_question, "used": used, "ignored": ignored, "inputs": inputs,
            "galleries": galleries, "search": search}


class StoreReader:
    """reports.verdicts.Reader on the tracking store."""

    def history(self, run_ids: list[str], key: str) -> pd.DataFrame:
        import pandas as pd

        from genlab import tracking

        rows = [(rid, key, step, value) for rid in run_ids for step, value in tracking.metric_history(rid, key)]
        return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])

    def json(self, artifact_uri: str, path: str) -> Any:
        return _artifact_json(artifact_uri, path)

    def children(self, run_id: str) -> pd.DataFrame:
        """The runs nested under run ``run_id`` (a search's trials)."""
        from genlab import tracking

        return tracking.search_runs(filter_string=tags.where(tags.PARENT_RUN, run_id))

    def png(self, artifact_uri: str, path: str) -> bytes | None:
        return _artifact_png(artifact_uri, path)


def _artifact_json(artifact_uri: str, path: str) -> Any:
    from genlab import tracking

    try:
        return json.loads(tracking.read_artifact(artifact_uri, path))
    except (tracking.TrackingError, ValueError):
        return None  # an absent or unreadable artifact: that figure is left out, the numbers are not affected


def _artifact_png(artifact_uri: str, path: str) -> bytes | None:
    """The artifact re-encoded as PNG if it is an image PIL can open (so the HTML only embeds checked PNGs)."""
    from PIL import Image

    from genlab import tracking

    try:
        with Image.open(io.BytesIO(tracking.read_artifact(artifact_uri, path))) as im:
            im.load()
            buf = io.BytesIO()
            im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB").save(buf, format="PNG")
            return buf.getvalue()
    except (tracking.TrackingError, OSError, ValueError, Image.DecompressionBombError):
        return None


def compute(collected: dict[str, Any]) -> dict[str, V.Verdict]:
    """Each question's verdict (its rule, then the convergence gate), in the report's order."""
    from reports import questions

    out = {}
    for q in questions.QUESTIONS:
        out[q.name] = q.judge(collected["per_question"][q.name], collected["inputs"][q.name])
        out[q.name].profile = collected["used"][q.name]
    return out


# ---------------------------------------------------------------- the questions' views in the MLflow UI

def share_views(verdicts: dict[str, V.Verdict], run_info: dict[str, tuple[str, str]], study: str, base: str,
                ) -> dict[str, str]:
    """Store each answered question's view of its runs on the experiment that holds them (most of them, if they
    are in several): the runs grouped by arm, seeds averaged, the metrics its rule decides on first; key
    ``genlab-<study>-<question>-<profile>``, so the report of another profile keeps its own. Returns question ->
    the view's address."""
    from genlab import tracking
    from reports import questions

    now, out = int(time.time() * 1000), {}
    for q in questions.QUESTIONS:
        v = verdicts[q.name]
        run_ids = [r for r in dict.fromkeys(v.run_ids) if r in run_info]
        if not run_ids or not q.deciding:
            continue
        experiment = collections.Counter(run_info[r][0] for r in run_ids).most_common(1)[0][0]
        key = f"genlab-{study}-{q.name}-{v.profile}"
        tracking.set_experiment_tag(experiment, ui.view_tag(key), view_of(q, v.profile, study, run_ids, now))
        out[q.name] = ui.view_url(base, experiment, key)
    return out


def view_of(q: V.Question, profile: str, study: str, run_ids: list[str], now_ms: int) -> str:
    """The tag value of a question's view: the runs the report read, by id; a view too long for a tag (hundreds
    of runs) shows the question's finished runs of the profile instead."""
    question = tags.where(tags.QUESTION, q.name)
    view = ui.View(f"{q.name.upper()} by arm ({study}, {profile})", f"{q.name.upper()}: the deciding metrics",
                   tags.ARM, q.deciding, q.curves,
                   f"{question} AND attributes.run_id IN ({', '.join(repr(r) for r in run_ids)})")
    try:
        return ui.envelope(view, now_ms)
    except ValueError:
        by_tags = " AND ".join((question, tags.where(tags.STUDY, study), tags.where(tags.PROFILE, profile),
                                "attributes.status = 'FINISHED'"))
        return ui.envelope(dataclasses.replace(view, search=by_tags), now_ms)


# ---------------------------------------------------------------- rendering

def figures_for(verdicts: dict[str, V.Verdict], labels: dict[str, str], folder: Path) -> dict[str, dict[str, Any]]:
    """Draw every figure the data allows into ``folder``; returns name -> {path (relative), run_ids}."""
    from reports import figures as F
    from reports import questions

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    for q in questions.QUESTIONS:
        for name, (fig, run_ids) in q.figures(verdicts[q.name], labels).items():
            if name in out:
                raise ValueError(f"figure {name} of {q.name} is drawn by another question too")
            if fig is None:
                continue
            if isinstance(fig, bytes):  # a picture the run logged, shown as it is
                (folder / f"{name}.png").write_bytes(fig)
            else:
                F.save(fig, folder / f"{name}.png")
            out[name] = {"path": f"figures/{name}.png", "run_ids": list(run_ids)}
    return out


def fmt_number(x: Any, digits: int, lang: str) -> str:
    """A number as the report prints it: French decimal comma and narrow-space thousands; NaN/None -> an em dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, bool):
        return str(x)
    x = float(x)
    text = f"{x:,.{digits}f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.{max(digits, 2)}e}"
    if lang == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def environment(lang: str, run_info: dict[str, tuple[str, str]], base: str) -> Any:
    """Jinja environment of one language. Autoescape is on: text that comes from runs (names, tags) is written
    as HTML entities, which Markdown viewers display as text and markdown.to_html keeps escaped."""
    import jinja2
    from markupsafe import Markup, escape


    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)

    def num(x: Any, digits: int = 2) -> str:
        return fmt_number(x, digits, lang)

    def ci(s: V.Stat | None, digits: int = 2) -> str:
        if s is None or not s.n:
            return "—"
        if math.isnan(s.half):
            return f"{num(s.mean, digits)} (n=1)"
        return f"{num(s.mean, digits)} ± {num(s.half, digits)} (n={s.n})"

    def diff(c: V.Comparison, digits: int = 2) -> str:
        if c.has_ci:
            return f"Δ = {num(c.diff, digits)} [{num(c.low, digits)} ; {num(c.high, digits)}]"
        return f"Δ = {num(c.diff, digits)}"

    def url(run_id: str) -> str:
        return ui.run_url(base, run_info.get(run_id, ("0", ""))[0], run_id)

    def runs(ids: Any) -> Markup:
        ids = list(dict.fromkeys(ids or []))
        return Markup(", ").join(Markup("[{}]({})").format(escape(r[:8]), escape(url(r))) for r in ids) or Markup("—")

    def run_name(run_id: str) -> str:
        return run_info.get(run_id, ("", ""))[1]

    def short(x: Any) -> str:  # a condition's value as the plans write it: 0.5, 1, 128
        return f"{float(x):g}".replace(".", "," if lang == "fr" else ".")

    env.filters.update(num=num, ci=ci, diff=diff, runs=runs, url=url, run_name=run_name, short=short)
    return env


def partial(lang: str, question: str) -> str:
    """The template of one question's text in one language."""
    return f"{lang}/questions/{question}.md.j2"


def labels_of(lang: str) -> dict[str, str]:
    """The figure and picture words of one language: the shared ones (labels.yaml) and each question's own (the
    ``labels`` of its partial). A word defined twice must mean the same thing."""
    import yaml

    from reports import questions

    labels = yaml.safe_load((TEMPLATES / lang / "labels.yaml").read_text(encoding="utf-8"))
    env = environment(lang, {}, "")
    for q in questions.NAMES:
        for key, word in env.get_template(partial(lang, q)).module.labels.items():
            if labels.setdefault(key, word) != word:
                raise ValueError(f"label {key} of {partial(lang, q)} differs from another question's")
    return labels


def render(lang: str, verdicts: dict[str, V.Verdict], figures: dict[str, dict], context: dict[str, Any],
           run_info: dict[str, tuple[str, str]]) -> str:
    from reports import markdown, questions
    from reports import verdicts as V

    env = environment(lang, run_info, context["ui"])
    md = env.get_template(f"{lang}/report.md.j2").render(
        v=verdicts, fig=figures, th={q.name: q.thresholds for q in questions.QUESTIONS}, min_seeds=V.MIN_SEEDS,
        partials={q: partial(lang, q) for q in questions.NAMES}, **{**context, "questions": questions.NAMES})
    return markdown.with_contents(md)


def html_page(lang: str, title: str, body: str) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    return env.get_template("page.html.j2").render(lang=lang, title=title, body=Markup(body))


def data_uri(folder: Path) -> Any:
    """The image_src of markdown.to_html: a local PNG of the report folder as a data: URI (checked signature)."""
    def src(path: str) -> str:
        file = (folder / path).resolve()
        if folder.resolve() not in file.parents or not file.is_file():
            raise ValueError(f"report image {path} is not a file of the report")
        content = file.read_bytes()
        if not content.startswith(PNG_SIGNATURE):
            raise ValueError(f"report image {path} is not a PNG")
        return "data:image/png;base64," + base64.b64encode(content).decode("ascii")
    return src


# ---------------------------------------------------------------- the command

def run(cfg: ReportConfig, context: Context) -> Result:
    """Build the report in both languages, log it as one run; its lines give each verdict and the files."""
    from genlab import tracking
    from reports import gallery, markdown, questions

    validate(cfg)
    uri = tracking.open_existing_store()
    collected = collect(cfg.study, cfg.profile)
    if not len(collected["runs"]):  # nothing to answer from: a report of five empty sections helps nobody
        raise ConfigError(f"no runs of study '{cfg.study}' in {redacted(uri)}: run `genlab study --study {cfg.study} "
                          "--profile quick` (or `make study`) first, or set MLFLOW_TRACKING_URI to the store that has them")
    verdicts = compute(collected)
    runs = collected["runs"]
    run_info = {r["run_id"]: (str(r["experiment_id"]), str(r.get("tags.mlflow.runName") or ""))
                for _, r in runs.iterrows()} if len(runs) else {}
    run_info.update({r["run_id"]: (str(r["experiment_id"]), str(r["run_name"]))  # the search's trials
                     for _, r in collected["search"]["trials"].iterrows()})
    base = ui_base(cfg, uri)
    views = share_views(verdicts, run_info, cfg.study, base)
    shown = {"study": cfg.study, "profile": cfg.profile, "store": redacted(uri), "ui": base,
             "run_link": ui.run_url(base, "<experiment_id>", "<run_id>"), "views": views,
             "deciding": {q.name: q.deciding for q in questions.QUESTIONS},
             "ignored": collected["ignored"], "used": collected["used"],
             "gal": collected["galleries"], "code_versions": code_versions(collected["per_question"]),
             "seed_flag": seed_flag(collected["per_question"])}

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".building-") as tmp:  # nothing half-written in out/
        staged = Path(tmp)
        for lang in LANGUAGES:
            folder = staged / lang
            labels = labels_of(lang)
            figs = figures_for(verdicts, labels, folder / "figures")
            gallery.save(collected["galleries"], folder)
            md = render(lang, verdicts, figs, {**shown, "lab": labels}, run_info)
            (folder / "report.md").write_text(md, encoding="utf-8")
            title = next((line[2:] for line in md.splitlines() if line.startswith("# ")), "genlab")
            page = html_page(lang, markdown.inline(title, lambda s: s), markdown.to_html(md, data_uri(folder)))
            (folder / "report.html").write_text(page, encoding="utf-8")
        (staged / "verdicts.json").write_text(json.dumps(summary(verdicts, views), indent=2, sort_keys=True),
                                              encoding="utf-8")
        for name in (*LANGUAGES, "verdicts.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            (staged / name).rename(target)

    params = dataclasses.asdict(cfg)
    run_tags = {tags.KIND: tags.REPORT, tags.STUDY: cfg.study, tags.PROFILE: cfg.profile,
                **{f"{tags.PREFIX}verdict.{q}": v.status for q, v in verdicts.items()}, **context.tags}
    with tracking.start_run(cfg.experiment, f"report {cfg.study} {cfg.profile}", params, run_tags,
                            parent_run_id=context.parent_run_id) as run:
        for lang in LANGUAGES:
            for file in sorted(p for p in (out / lang).rglob("*") if p.is_file()):
                run.log_artifact(file, str(Path("report") / file.parent.relative_to(out)))
        run.log_artifact(out / "verdicts.json", "report")
    lines = [f"{q}: {v.status}{''.join(f' {k}={c}' for k, c in v.numbers.get('claims', {}).items())} "
             f"({len(set(v.run_ids))} runs, profile {v.profile})" for q, v in verdicts.items()]
    lines += [f"report ({lang}): {out / lang / 'report.md'}  {out / lang / 'report.html'}" for lang in LANGUAGES]
    return Result(run.run_id, {}, (*lines, f"logged as run {run.run_id} ({tags.KIND}={tags.REPORT})"))


def code_versions(per_question: dict[str, pd.DataFrame]) -> list[str]:
    """The code versions (git commits) of the runs the report reads: what to check out to reproduce them."""
    versions = set()
    code_version = tags.column(tags.CODE_VERSION)
    for runs in per_question.values():
        if len(runs) and code_version in runs:
            versions |= {str(v) for v in runs[code_version].dropna()}
    return sorted(versions)


def seed_flag(per_question: dict[str, pd.DataFrame]) -> str:
    """`` --seed-offset N`` when the runs the report reads were planned with seeds shifted by N (tag
    genlab.seed_offset; runs without it: 0), so that the reproduce box's command trains those seeds."""
    offsets = set()
    column = tags.column(tags.SEED_OFFSET)
    for runs in per_question.values():
        if len(runs):
            offsets |= {int(v) for v in runs[column].fillna("0")} if column in runs else {0}
    shifted = sorted(offsets - {0})
    return f" --seed-offset {'/'.join(map(str, shifted))}" if shifted else ""


def summary(verdicts: dict[str, V.Verdict], views: dict[str, str]) -> dict[str, Any]:
    """The machine-readable verdicts (verdicts.json): status, sub-claims, run ids, missing runs, and the address of
    the question's view in the MLflow UI (absent without runs)."""
    out = {}
    for q, v in verdicts.items():
        claims = v.numbers.get("claims", {})
        out[q] = {"status": v.status, "claims": claims, "profile": v.profile, "run_ids": v.run_ids,
                  "missing": v.missing, **({"mlflow_view": views[q]} if q in views else {})}
    return out
