"""The flow: config → cluster → read → classify → filter → write → report. Tests call `run` directly.

Tasks stream read → classify → decide → write per unit (curator.stages, run by curator.execution)
and return only small counts; the client records each finished unit in the output folder's manifest
as it completes, so a rerun of the same command skips what the manifest lists (curator.io.manifest).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.registry import build_classifiers, family_class
from curator.cluster import connect, explain_lost_workers
from curator.columns import ERROR_COLUMN, HIDDEN_PREFIX, LINE_COLUMN, is_working, unescape
from curator.config import ClassifierConfig, ClusterConfig, Config
from curator.errors import ConfigError, UserError
from curator.execution import run_distributed, run_sync
from curator.filters import build_filter
from curator.inference.engine import resolve_autocast, resolve_device, units_in_flight
from curator.inference.numerics import numerics_label
from curator.io.files import InputFile, discover, expand_entries
from curator.io.gpu import partition_reader
from curator.io.guard import check_names, check_overlap
from curator.io.lock import own_output
from curator.io.manifest import SUMMARY, Manifest, fingerprint, open_manifest, remove_temporaries, signature
from curator.io.partitions import Part, group_parts, parse_blocksize, plan_parts, small_files_hint
from curator.io.paths import absolute
from curator.io.readers import read_file
from curator.io.schema import attribute_schema, plan_schema, settle_schema
from curator.io.writers import OutputTarget, atomic_write
from curator.progress import Progress
from curator.report import COUNTS, format_summary, merge_examples, save_summary, summarise
from curator.report_html import render, save_html_report
from curator.stages import KEEP_COLUMN, Work, output_types, text_fields
from curator.validate import check_config

log = logging.getLogger(__name__)

HEAD_ROWS = 100  # records per file read at start-up to check the text field
REPORT = "_report.html"  # the HTML report beside the outputs (also report.html in the run directory)


class RunFailedError(UserError, RuntimeError):
    """Some units failed for good; the finished ones are recorded, so a rerun resumes."""


def mix_source(cfg: Config) -> str | None:
    """task=mix: the attribute folder (absolute for local paths); None for classify runs."""
    if cfg.task != "mix" or not cfg.mix.attributes:
        return None
    return absolute(str(cfg.mix.attributes))


def output_path(cfg: Config, settings: dict[str, Any] | None = None) -> str:
    """The data folder: configured, or derived from dataset + classifiers + a short hash of the settings
    that decide the outputs (no timestamp: the same command resumes; another filter, dtype or classifier
    setting gets its own folder, so commands run one after another, and sweep jobs, never collide).
    `settings`: the run's `run_settings`, when the caller has them already."""
    if cfg.output.path:
        return absolute(str(cfg.output.path))
    name = "+".join(cfg.classifier) + ("-mixed" if cfg.task == "mix" else "")
    name += "-" + fingerprint(run_settings(cfg) if settings is None else settings)[:8]
    return os.path.abspath(os.path.join("outputs", "data", cfg.dataset.name, name))


# ---- start-up checks ---------------------------------------------------------------------------
def check_text_fields(
    files: Sequence[InputFile],
    classifiers: Sequence[DistributedDataClassifier],
    configs: dict[str, ClassifierConfig] | None = None,
) -> list[list[str]]:
    """Fail before any work when no readable input file has a classifier's text field (first records of each).

    A file whose head cannot be read (a corrupt archive) is skipped with a warning: its unit fails or
    quarantines later, on its own, and the other files still decide. Returns the columns found in the
    heads that were read (for the output-column check).
    """
    columns: list[list[str] | None] = []
    unusable: dict[str, str] = {}  # file → why its head cannot be read, or why none of it is usable
    empty: set[str] = set()  # files whose head holds no record (blank lines only, no rows)
    for field in text_fields(classifiers):
        for i, file in enumerate(files):
            if i == len(columns):  # read each file's head at most once, and only as far as needed
                columns.append(_head_columns(file, unusable, empty))
            if field in (columns[i] or []):
                break
        else:
            if len(empty) == len(files):  # no record anywhere: the run writes empty outputs, counts 0
                continue
            own = [name for name, c in (configs or {}).items() if c.text_field == field]  # set per classifier
            setting = f"classifier.{own[0]}.text_field" if own else "dataset.text_field"
            raise ConfigError(
                f"Text field {field!r} is not in any of the {len(files)} input file(s) (first "
                f"{HEAD_ROWS} records of each); {_missing_field(files, columns, unusable, empty, setting)}"
            )
    return [c for c in columns if c is not None]


def _missing_field(
    files: Sequence[InputFile],
    columns: list[list[str] | None],
    unusable: dict[str, str],
    empty: set[str],
    setting: str,
) -> str:
    """What the heads showed, for the error of a text field no file has: the columns of the first file
    with records, or why it (or, when none could be read, the first file) gives none; and what to do."""
    heads = [
        (f.path, c) for f, c in zip(files, columns, strict=False) if c is not None and f.path not in empty
    ]
    if heads and heads[0][0] in unusable:
        return f"no record of {heads[0][0]} is usable ({unusable[heads[0][0]]}). Fix or remove that file."
    if heads:
        return (
            f"columns found in {heads[0][0]}: {heads[0][1]}. Set {setting} to the column that holds the text."
        )
    if unusable:
        first = next(iter(unusable))
        return f"none could be read ({first}: {unusable[first]}). Fix or remove that file."
    return f"none could be read. Set {setting} to the column that holds the text."


def check_columns(
    cfg: Config, classifiers: Sequence[DistributedDataClassifier], found: Sequence[Sequence[str]]
) -> None:
    """Output columns may not overwrite an input column, nor use the run's own working-column prefix."""
    outputs = list(output_types(classifiers))
    for key, name in (
        ("dataset.text_field", cfg.dataset.text_field),
        ("dataset.id_field", cfg.dataset.id_field),
    ):
        if name.startswith(HIDDEN_PREFIX):
            raise ConfigError(
                f"{key}={name!r}: names starting with {HIDDEN_PREFIX!r} are reserved for the run."
            )
    reserved = [c for c in outputs if c.startswith(HIDDEN_PREFIX)]
    if reserved:
        raise ConfigError(f"Output column(s) {reserved}: names starting with {HIDDEN_PREFIX!r} are reserved.")
    inputs = dict.fromkeys(
        [cfg.dataset.text_field, cfg.dataset.id_field, *(c for cols in found for c in cols)]
    )
    clash = [c for c in outputs if c in inputs]
    if clash:
        owners = {c: clf.name for clf in classifiers for c in clf.output_types()}
        named = ", ".join(f"{c!r} (classifier {owners[c]})" for c in clash)
        raise ConfigError(
            f"Output column(s) {named} would overwrite input column(s) of the same name; "
            f"set another name, e.g. classifier.{owners[clash[0]]}.pred_column=... (input columns: "
            f"{list(inputs)[:20]})."
        )


def _head_columns(
    file: InputFile, unusable: dict[str, str] | None = None, empty: set[str] | None = None
) -> list[str] | None:
    """The columns of a file's first records, or None (with a warning) when they cannot be read; why it
    cannot, or why a head of bad records only (each would be quarantined) is so, goes in `unusable`, and
    a file with no record at all in `empty`."""
    try:
        head = read_file(file, None, None, limit=HEAD_ROWS)
    except Exception as err:  # zlib.error, EOFError, ArrowInvalid, ZstdError...: any unreadable head
        log.warning(
            "Cannot read the first records of %s (%s: %s); skipped in the start-up check",
            file.path,
            type(err).__name__,
            err,
        )
        if unusable is not None:
            unusable[file.path] = f"{type(err).__name__}: {err}"
        return None
    if empty is not None and not len(head):
        empty.add(file.path)
    if unusable is not None and len(head) and head[ERROR_COLUMN].notna().all():
        where = "line" if file.format == "jsonl" else "row"
        unusable[file.path] = f"{where} {head[LINE_COLUMN].iloc[0]}: {head[ERROR_COLUMN].iloc[0]}"
        log.warning("No record among the first of %s is usable (%s)", file.path, unusable[file.path])
    return [unescape(str(c)) for c in head.columns if not is_working(c)]


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


# keys added after output folders existed, left out at these values so that those keep their fingerprint
LATER_KEYS = {"examples_path": None, "examples_text_field": "text", "examples_label_field": "label"}


def _classifier_settings(clf: Any) -> dict[str, Any]:
    """A classifier's config as settings, without later keys at their defaults (nor empty label examples)."""
    plain = _plain(clf)
    for key, default in LATER_KEYS.items():
        if key in plain and plain[key] == default:
            del plain[key]
    for label in plain.get("labels") or []:
        if isinstance(label, dict) and not label.get("examples"):
            label.pop("examples", None)
    return plain


def model_commit(model: str | None, revision: str | None) -> str | None:
    """The Hugging Face cache's commit for a hub model (offline lookup only); None for local folders."""
    if not model or Path(model).expanduser().exists():
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model, revision=revision, local_files_only=True))
    except Exception:  # not in the cache (an embedded or local model): the id and revision must do
        return None
    return folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None


def auto_dtype_on_cpu(cfg: Config) -> str | None:
    """What `inference.dtype=auto` computes in here, where that depends on the CPU: bf16 on one with native
    bf16 (AMX, AVX512-BF16), float32 elsewhere. Only for CPU workers on this machine (local, sync); None
    for float32 (what earlier versions computed, so their folders keep their fingerprint) and for
    clusters elsewhere, whose CPUs are not known before they start (set inference.dtype there)."""
    if cfg.inference.dtype != "auto" or cfg.cluster.kind not in ("local", "sync"):
        return None
    device = resolve_device(cfg.inference.device)
    autocast = resolve_autocast("auto", device, cfg.inference.quantize) if device.type == "cpu" else None
    return numerics_label(autocast, None) if autocast is not None else None


def run_settings(cfg: Config) -> dict[str, Any]:
    """What decides the outputs' content, hashed into the manifest's fingerprint.

    Classifier configs (models, revisions, labels, columns, limits), resolved hub commits, numerics,
    the filter, output format, text/id fields and the split size. Not cluster settings, never secrets.
    """
    commits = {}
    for name, clf in cfg.classifier.items():
        found = {k: model_commit(getattr(clf, k, None), clf.revision) for k in ("model", "base_model")}
        commits[name] = {k: v for k, v in found.items() if v}
    files = {n: family_class(c.family).config_fingerprint(c) for n, c in cfg.classifier.items()}
    return {
        "classifiers": {name: _classifier_settings(clf) for name, clf in cfg.classifier.items()},
        "model_commits": commits,
        # examples files, trained heads: only when a classifier names some (earlier folders keep theirs)
        **({"files": {n: f for n, f in files.items() if f}} if any(files.values()) else {}),
        "inference": {
            "dtype": cfg.inference.dtype,
            "quantize": cfg.inference.quantize,
            "fast_encoder": cfg.inference.fast_encoder,
            # a resume on a CPU where auto resolves otherwise would mix bf16 and float32 rows: refused
            **({"auto_dtype_on_cpu": auto} if (auto := auto_dtype_on_cpu(cfg)) else {}),
        },
        "filter": _plain(cfg.filter),
        "output_format": cfg.output.format,
        **({"mix": {"attributes": mix_source(cfg)}} if cfg.task == "mix" else {}),
        # only when not the defaults: output folders of earlier versions keep their fingerprint
        **{
            f"output_{key}": getattr(cfg.output, key)
            for key, default in (("content", "all"), ("compression", None), ("row_group_size", None))
            if getattr(cfg.output, key) != default
        },
        "dataset": {
            "text_field": cfg.dataset.text_field,
            "id_field": cfg.dataset.id_field,
            "format": cfg.dataset.format,
            "blocksize": parse_blocksize(cfg.dataset.blocksize),
            # only when not the default: output folders of earlier versions keep their fingerprint
            **(
                {"invalid_text": cfg.dataset.invalid_text} if cfg.dataset.invalid_text != "quarantine" else {}
            ),
        },
    }


# ---- the run -----------------------------------------------------------------------------------
def _entry(part: Part, stats: dict[str, Any]) -> dict[str, Any]:
    """The manifest line of a finished unit: input identity, outputs, counts and label counts."""
    keep = ("unit", "input", "outputs", *COUNTS, "repaired", "quarantined_by_stage", "labels", "lines")
    return {**{k: stats.get(k) for k in keep}, "signature": signature(part), "finished": time.time()}


def _skipped(entry: dict[str, Any]) -> dict[str, Any]:
    """A unit finished by an earlier run, as this run's report counts it (so totals cover the dataset)."""
    keep = ("unit", "input", "outputs", *COUNTS, "repaired", "quarantined_by_stage", "labels")
    return {**{k: entry.get(k) for k in keep}, "output": entry["outputs"][0], "status": "skipped"}


def _failed(part: Part, err: Exception) -> dict[str, Any]:
    reason = f"{type(err).__name__}: {err}"
    return {"unit": part.name, "input": part.path, **dict.fromkeys(COUNTS, 0), "labels": {}, "error": reason}


def _prepare(cfg: Config, manifest: Manifest, parts: list[Part]) -> tuple[list[list[Part]], dict[str, Any]]:
    """Tasks still to run (a group reruns whole unless all its units are done) and finished entries."""
    stale = manifest.stale(parts)
    if stale:  # outputs of an input that has changed since: they would otherwise linger
        log.info("%d unit(s) recorded for since-changed input(s): removing their outputs", len(stale))
        manifest.remove_outputs(stale)
        manifest.rewrite()
    if others := manifest.others(parts):  # kept: a folder may gather runs over several dataset.paths
        names = ", ".join(sorted(e["unit"] for e in others)[:5]) + (" ..." if len(others) > 5 else "")
        log.warning(
            "The output folder also holds %d unit(s) of input files this run does not read (renamed, "
            "deleted, or from another dataset.path): %s. They are kept and not in this run's counts; "
            "output.mode=overwrite starts the folder afresh.",
            len(others),
            names,
        )
    groups = group_parts(parts, cfg.dataset.files_per_partition, parse_blocksize(cfg.dataset.blocksize))
    finished = [all(manifest.done(p) for p in g) for g in groups]
    todo = [g for g, skip in zip(groups, finished, strict=True) if not skip]
    if (hint := small_files_hint([p for g in todo for p in g], cfg.dataset.files_per_partition)) is not None:
        log.warning("%s", hint)  # the files still to do: a finished run resumed is not told
    done = {p.name: manifest.done(p) for g, skip in zip(groups, finished, strict=True) if skip for p in g}
    return todo, done


def run(cfg: Config, run_dir: str | None = None) -> dict[str, Any]:
    """Classify, filter and write a dataset as configured (resuming a killed run); return the summary."""
    started = time.perf_counter()
    check_config(cfg)  # every setting's range, choice and consistency, all problems in one message
    if cfg.task in ("train", "evaluate"):  # each runs an inner classify run of this function
        from curator.training import evaluate, train

        return (train.run_train if cfg.task == "train" else evaluate.run_evaluate)(cfg, run_dir)
    settings = run_settings(cfg)  # once: the default output folder and the manifest both hash it
    root = output_path(cfg, settings)
    options, out_options = cfg.dataset.storage_options, cfg.output.storage_options  # never logged
    entries = expand_entries(cfg.dataset.path, options)
    check_overlap(entries, [], root, options, out_options)  # before listing: the output must not be listed
    files = discover(entries, cfg.dataset.format, options)
    check_overlap(entries, files, root, options, out_options)  # links that lead into the output folder
    classifiers = build_classifiers(cfg.classifier, cfg.dataset.text_field, cfg.inference)
    flt = build_filter(cfg.filter, classifiers)
    reader = partition_reader(cfg.dataset.backend)  # pandas, or cuDF: fails here without RAPIDS
    check_columns(cfg, classifiers, check_text_fields(files, classifiers, cfg.classifier))
    parts = plan_parts(files, parse_blocksize(cfg.dataset.blocksize))
    outputs = output_types(classifiers)
    text_columns = text_fields(classifiers)
    attributes = cfg.output.content == "attributes"
    keep_column = KEEP_COLUMN if attributes and flt.active else None
    if keep_column in outputs:
        raise ConfigError(
            f"A classifier writes column {KEEP_COLUMN!r}, which attribute files use for the filter."
        )
    schema = plan_schema(
        files,
        cfg.output.format,
        outputs,
        cfg.dataset.id_field,
        cfg.dataset.invalid_text,
        only=[cfg.dataset.id_field] if attributes else None,
        text_columns=text_columns,
    )
    if attributes:
        schema = attribute_schema(schema, cfg.dataset.id_field, outputs, keep_column)
    target = OutputTarget(
        root,
        cfg.output.format,
        cfg.filter.write_filtered,
        schema,
        compression=cfg.output.compression,
        row_group_size=cfg.output.row_group_size,
        content=cfg.output.content,
        keep_column=keep_column,
        storage_options=dict(out_options),
    )
    check_names(parts, target)
    work = Work(
        tuple(classifiers),
        flt,
        target,
        # the reader quarantines rows without it only where a classifier reads it (not when every
        # classifier has its own classifier.<name>.text_field)
        cfg.dataset.text_field if cfg.dataset.text_field in text_columns else None,
        cfg.dataset.id_field,
        reader,
        cfg.dataset.invalid_text,
        attributes=mix_source(cfg),
        text_columns=text_columns,
    )
    with own_output(root, out_options):  # marker + lock: a second run on this folder stops here
        manifest = open_manifest(root, settings, cfg.output.mode, out_options)
        schema = settle_schema(manifest.fs, manifest.root, schema, resuming=bool(manifest.entries))
        work = dataclasses.replace(work, target=dataclasses.replace(target, schema=schema))
        return _process(cfg, run_dir, started, (files, parts), manifest, work, root)


def _process(
    cfg: Config,
    run_dir: str | None,
    started: float,
    inputs: tuple[list[InputFile], list[Part]],
    manifest: Manifest,
    work: Work,
    root: str,
) -> dict[str, Any]:
    """Run the tasks the manifest does not list yet (holding the output folder root), record each, report."""
    files, parts = inputs
    todo, done = _prepare(cfg, manifest, parts)
    log.info(
        "%d input file(s), %d unit(s): %d done before, %d task(s) to run → %s",
        *(len(files), len(parts), len(done), len(todo), root),
    )
    recorded = {p.name: manifest.done(p) for p in parts}  # line counts of finished JSONL parts
    known = {name: e["lines"] for name, e in recorded.items() if e and e.get("lines") is not None}
    results: dict[str, dict[str, Any]] = {}
    examples: dict[str, Any] = {}
    progress = Progress(len(todo), quiet=cfg.quiet, unit="tasks")
    with connect(task_threads(cfg)) as client:
        outcomes = (
            run_sync(todo, parts, work, known, units_in_flight(cfg.inference))
            if client is None
            else explain_lost_workers(
                client, cfg.cluster, run_distributed(client, todo, parts, work, known, cfg.dataset.retries)
            )
        )
        try:
            for group, outcome in outcomes:
                _collect(group, outcome, manifest, results, examples)
                progress.update(
                    0
                    if isinstance(outcome, Exception)
                    else sum(s["read"] for s in outcome if isinstance(s, dict))
                )
        finally:
            progress.close()
    # the workers are gone now: a file a lost worker (a cancelled SLURM job) was writing is not finished
    remove_temporaries(manifest.fs, manifest.root)
    return _finish(cfg, run_dir, started, manifest, parts, done, results, examples, root)


def task_threads(cfg: Config) -> ClusterConfig:
    """The cluster settings with at least `inference.units_in_flight` task threads per worker we start:
    while one task has the device, the others read, tokenise, post-process and write."""
    threads = max(cfg.cluster.threads_per_worker, units_in_flight(cfg.inference))
    return dataclasses.replace(cfg.cluster, threads_per_worker=threads)


def _collect(group: list[Part], outcome: Any, manifest: Manifest, results: dict, examples: dict) -> None:
    """Record a finished task in the manifest (its outputs are all in place), or note its failure."""
    if isinstance(outcome, Exception):
        names = ", ".join(p.path if p.index is None else f"{p.path} ({p.name})" for p in group)
        log.error("Failed: %s: %s", names, outcome, exc_info=outcome)
        results.update({p.name: {**_failed(p, outcome), "status": "failed"} for p in group})
        return
    failed = [(p, s) for p, s in zip(group, outcome, strict=True) if isinstance(s, Exception)]
    for part, err in failed:  # a unit of the task failed alone (reading or writing it): the others finished
        log.error("Failed: %s (%s): %s", part.path, part.name, err, exc_info=err)
        results[part.name] = {**_failed(part, err), "status": "failed"}
    group = [p for p, s in zip(group, outcome, strict=True) if not isinstance(s, Exception)]
    outcome = [s for s in outcome if not isinstance(s, Exception)]
    if not outcome:
        return
    manifest.record([_entry(p, s) for p, s in zip(group, outcome, strict=True)])
    # a few example texts per label: merged as units finish (not kept per unit, so memory stays flat)
    found = [{"examples": s.pop("examples", None)} for s in outcome]
    examples.update(merge_examples([{"examples": dict(examples)}, *found]))
    results.update({s["unit"]: {**s, "status": "done"} for s in outcome})
    log.debug("Finished %s", ", ".join(p.name for p in group))


def _finish(
    cfg: Config,
    run_dir: str | None,
    started: float,
    manifest: Manifest,
    parts: list[Part],
    done: dict[str, Any],
    results: dict[str, dict[str, Any]],
    examples: dict[str, Any],
    root: str,
) -> dict[str, Any]:
    """The summary (every unit, in input order), saved beside the outputs and in the run directory."""
    stats = [results[p.name] if p.name in results else _skipped(done[p.name]) for p in parts]
    summary = summarise(stats, time.perf_counter() - started, root)
    summary["examples"] = examples  # merged as units finished (skipped units carry none)
    summary["fingerprint"] = manifest.header["fingerprint"]
    summary["units"] = dict(Counter(s["status"] for s in stats))
    text = json.dumps(summary, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    atomic_write(manifest.fs, f"{manifest.root}/{SUMMARY}", lambda handle: handle.write(text))
    page = render(summary, _plain(cfg)).encode("utf-8")
    atomic_write(manifest.fs, f"{manifest.root}/{REPORT}", lambda handle: handle.write(page))
    if run_dir:
        summary["report"] = save_summary(summary, run_dir)
        save_html_report(summary, run_dir, _plain(cfg))
    failed = [s for s in stats if s["status"] == "failed"]
    if failed:
        listed = "; ".join(f"{s['input']} ({s['unit']}): {s['error']}" for s in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        units = summary["units"]
        raise RunFailedError(
            f"{len(failed)} of {len(stats)} unit(s) failed: {listed}{more}. The {units.get('done', 0)} "
            f"finished now and {units.get('skipped', 0)} finished before are kept and recorded in "
            f"{manifest.path}: fix the cause and rerun the same command to resume."
        )
    log.info(
        "Done: read %d, written %d, filtered %d, quarantined %d in %.1f s → %s",
        *(summary[k] for k in ("read", "written", "filtered", "quarantined", "seconds", "output_path")),
    )
    if not cfg.quiet:
        print(format_summary(summary))
    return summary
