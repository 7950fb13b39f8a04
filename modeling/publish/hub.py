"""Publish models to the Hugging Face Hub: stage the exact folder a repo gets, then upload it.

    python -m modeling.publish card out/demo/phase2 --results out/finetune    # write and list the staged folder
    python -m modeling.publish push out/demo/phase2 --repo my-org/demo --results out/finetune [--private]
    python -m modeling.publish push out/demo --repo my-org/demo   # a run: each phase to its branch, the last to main
    python -m modeling.publish import-composer ep0-ba272000-rank0.pt --config RUN.yaml --out FOLDER

Staging copies (hard-links where it can) the model's safetensors, config and tokenizer, writes the card,
and adds plots and results; nothing is written into the model folder. Pickle files are never published.
The token comes from HF_TOKEN or the saved login (`hf auth login`) and is never printed; transient HTTP
errors are retried with backoff; a push that still fails prints the command that resumes it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from modeling.common import run_files
from modeling.common.cli import run_command
from modeling.common.errors import ConfigError
from modeling.pretrain.run_folder import PretrainingRun
from modeling.pretrain.summary import RevisionRecord, TrainingSummary
from modeling.publish.card import Card, build_card, revision_card

log = logging.getLogger(__name__)

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
STAGE_MARKER = ".modeling-hub-stage"  # marks a folder stage() may rebuild; left out of listings and uploads


class PushError(RuntimeError):
    """A push that failed after its retries; `resume` is the command that picks it up again."""

    def __init__(self, message: str, resume: str):
        super().__init__(message)
        self.resume = resume


# ------------------------------------------------------------------------------------ staging


def stage(card: Card, folder: str | Path) -> list[dict]:
    """Write the repo's files into an empty `folder`; returns one {path, bytes, sha256} per file."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not (folder / STAGE_MARKER).exists():
            raise ConfigError(
                f"--stage {folder}: not empty and not a staging folder this tool wrote; give a new or empty folder"
            )
        shutil.rmtree(folder)  # our own staging folder: rebuilt from the run on every call
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAGE_MARKER).write_text("written by python -m modeling.publish; never uploaded\n")
    for path_in_repo, source in sorted(card.files.items()):
        target = folder / path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            try:
                os.link(source, target)  # weights can be large: no copy where the filesystem allows
            except OSError:
                shutil.copy2(source, target)
    return list_folder(folder)


def list_folder(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAGE_MARKER):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        rows.append(
            {"path": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
        )
    return rows


def prepare(
    folder,
    repo_id: str,
    staged: Path,
    *,
    results=(),
    revision: str = "main",
    base_model: str | None = None,
    license: str | None = None,
) -> tuple[Card, list[dict]]:
    """Card, staged folder and its listing: everything a push sends, checked, nothing sent."""
    card = build_card(folder, repo_id, results=results, revision=revision, base_model=base_model, license=license)
    files = stage(card, staged)
    check_card(staged, card)
    return card, files


def check_card(folder: Path, card: Card) -> None:
    """The staged README.md parses with huggingface_hub's own reader, eval results included."""
    from huggingface_hub import ModelCard

    loaded = ModelCard.load(folder / "README.md")
    expected = len(card.card.data.eval_results or [])
    found = len(loaded.data.eval_results or [])
    if found != expected:
        raise ConfigError(
            f"{folder / 'README.md'}: huggingface_hub reads {found} evaluation results back, expected {expected}"
        )


# ------------------------------------------------------------------------------------ pushing


def hub_api():
    from huggingface_hub import HfApi

    # HF_ENDPOINT read now, not at import: a mirror or a local test server set after import is honoured.
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


def push_folder(
    staged: Path,
    repo_id: str,
    *,
    revision: str = "main",
    private: bool = False,
    message: str = "Upload model",
    retries: int = 4,
    retry_wait: float = 2.0,
    resume: str = "",
) -> str:
    """Create the repo (and branch) if needed and upload `staged` in one commit (huggingface_hub has the Hub
    check README.md's metadata first). huggingface_hub retries its own upload requests on transient errors;
    the retries here cover the other calls and outages longer than its five tries."""
    api = hub_api()
    steps = [("create repo", lambda: api.create_repo(repo_id, private=private or None, exist_ok=True))]
    if revision != "main":
        steps.append((f"create branch {revision}", lambda: api.create_branch(repo_id, branch=revision, exist_ok=True)))
    steps.append(
        (
            "upload",
            lambda: api.upload_folder(
                repo_id=repo_id,
                folder_path=str(staged),
                revision=revision,
                commit_message=message,
                ignore_patterns=[STAGE_MARKER],
            ),
        )
    )
    result = None
    for what, action in steps:
        result = _with_retries(action, what, retries, retry_wait, repo_id, resume)
    return getattr(result, "commit_url", None) or f"{api.endpoint}/{repo_id}/tree/{revision}"


def _with_retries(action, what: str, retries: int, wait: float, repo_id: str, resume: str):
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 (sorted into transient and final below)
            status = getattr(getattr(error, "response", None), "status_code", None)
            transient = status in TRANSIENT_STATUS or _is_connection_error(error)
            if transient and attempt < retries:
                delay = wait * 2**attempt
                log.warning(
                    "%s: %s failed (%s); retry %d of %d in %.1f s",
                    repo_id,
                    what,
                    _describe(error),
                    attempt + 1,
                    retries,
                    delay,
                )
                time.sleep(delay)
                continue
            tried = f" after {attempt + 1} attempts" if attempt else ""
            raise PushError(f"{repo_id}: {what} failed{tried}: {_describe(error)}", resume) from None


def _is_connection_error(error: Exception) -> bool:
    # huggingface_hub's HTTP client (httpx or its fork httpx2) names its network errors TransportError & co.
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (ConnectionError, TimeoutError)) or bool(names & {"TransportError", "TimeoutException"})


def _describe(error: Exception) -> str:
    from huggingface_hub import get_token

    text = " ".join(str(error).split()) or type(error).__name__
    token = get_token()
    return text.replace(token, "<token>") if token else text  # never let a token reach a log


def push(
    folder: str | Path,
    repo_id: str,
    *,
    results: list = (),
    revision: str = "main",
    private: bool = False,
    base_model: str | None = None,
    license: str | None = None,
    stage_dir: str | Path | None = None,
    retries: int = 4,
    retry_wait: float = 2.0,
) -> dict:
    """Stage `folder` with its card and push it to `repo_id` at `revision`. Returns what was sent."""
    resume = resume_command(
        folder, repo_id, results=results, revision=revision, private=private, base_model=base_model, license=license
    )
    with tempfile.TemporaryDirectory(prefix="hub-stage-") as tmp:
        staged = Path(stage_dir) if stage_dir else Path(tmp) / "repo"
        card, files = prepare(
            folder, repo_id, staged, results=results, revision=revision, base_model=base_model, license=license
        )
        url = push_folder(
            staged,
            repo_id,
            revision=revision,
            private=private,
            retries=retries,
            retry_wait=retry_wait,
            resume=resume,
            message=f"Upload {card.kind} from {Path(folder).name}",
        )
    return {"repo_id": repo_id, "revision": revision, "url": url, "files": files, "card": card}


def push_run(run_dir: str | Path, repo_id: str, **options) -> list[dict]:
    """Every phase of a pretraining run to a branch named after it; the last phase to main as well."""
    run = PretrainingRun(run_dir)
    phases = [p.phase for p in TrainingSummary.load(run.summary_json).phases]
    results, pushed = options.pop("results", ()), []
    for phase in phases:  # fine-tuning results describe the final model only
        pushed.append(
            push(
                run.folder / phase,
                repo_id,
                revision=phase,
                results=results if phase == phases[-1] else (),
                **options,
            )
        )
    pushed.append(push(run.folder / phases[-1], repo_id, revision="main", results=results, **options))
    return pushed


class PhasePusher:
    """Called by training at the end of each phase (recipe `hub.repo_id`): the phase to its branch, the last also
    to main. The folder is staged at once, while its files are final (the next phase rewrites the run's summary
    and plot); the upload runs in a background thread, pushes one after another, while training goes on: an
    upload takes minutes, and with several processes the others would wait for it at the next collective.
    A failed push does not stop training: it is logged with the command that redoes it. Each push that arrived is
    recorded in the run's `hub_pushes.json`; a resume hands finished phases over again and pushes what is not
    recorded there (a launch killed, or failed, before its push ended). `wait()` before the process ends."""

    RECORD = "hub_pushes.json"  # {"repo_id": ..., "pushed": {phase: [branches]}}

    def __init__(self, hub):
        self.hub = hub
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-push")
        self.pending: list[Future] = []
        self.pushed: list[str] = []  # revisions pushed, in order

    def __call__(self, run_dir: Path, phase: str, last: bool, trained_now: bool = True) -> None:
        branches = [phase, "main"] if last else [phase]
        if not trained_now:
            branches = [b for b in branches if b not in self._recorded(run_dir).get(phase, [])]
            if branches:
                log.info(
                    "phase %s: not yet on %s (%s): the launch that finished it stopped before its push ended",
                    phase,
                    self.hub.repo_id,
                    ", ".join(branches),
                )
        for revision in branches:
            staged = Path(tempfile.mkdtemp(prefix="hub-stage-")) / "repo"
            try:
                card, _ = prepare(run_dir / phase, self.hub.repo_id, staged, revision=revision)
            except Exception as error:  # a card that cannot be built must not end the training
                self._failed(run_dir, phase, revision, error)
                shutil.rmtree(staged.parent, ignore_errors=True)
                continue
            log.info("phase %s: pushing to %s (%s) in the background", phase, self.hub.repo_id, revision)
            self.pending.append(self.pool.submit(self._upload, run_dir, phase, revision, staged, card))

    def revision(self, folder: Path, record) -> None:
        """An intermediate checkpoint (hub.push_every) to the branch named after it, in the background (staged
        there too, beside the revision, so the weights are hard-linked rather than copied); once pushed, its
        weights are removed locally (revision.json stays: the card lists it)."""
        log.info("revision %s: pushing to %s in the background", record.revision, self.hub.repo_id)
        self.pending.append(self.pool.submit(self._upload_revision, folder, record.revision))

    def _upload_revision(self, folder: Path, revision: str) -> None:
        staged = folder.parent / f".stage-{revision}" / "repo"
        try:
            stage(revision_card(folder, self.hub.repo_id), staged)
            push_folder(
                staged,
                self.hub.repo_id,
                revision=revision,
                private=self.hub.private,
                resume=resume_command(folder, self.hub.repo_id, revision=revision, private=self.hub.private),
                message=f"Upload intermediate checkpoint {revision}",
            )
            self.pushed.append(revision)
            log.info("revision %s pushed to %s", revision, self.hub.repo_id)
            for path in folder.iterdir():  # the Hub holds it now; the record stays for the card
                if path.name != RevisionRecord.FILE:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        except Exception as error:  # logged with the command that redoes it; the revision is safe on disk
            self._revision_failed(folder, revision, error)
        finally:
            shutil.rmtree(staged.parent, ignore_errors=True)

    def _upload(self, run_dir: Path, phase: str, revision: str, staged: Path, card: Card) -> None:
        try:
            push_folder(
                staged,
                self.hub.repo_id,
                revision=revision,
                private=self.hub.private,
                resume=self._resume(run_dir, phase, revision),
                message=f"Upload {card.kind} from {phase}",
            )
            log.info("phase %s pushed to %s (%s)", phase, self.hub.repo_id, revision)
            recorded = self._recorded(run_dir)
            recorded[phase] = sorted(set(recorded.get(phase, [])) | {revision})
            run_files.write_json(run_dir / self.RECORD, {"repo_id": self.hub.repo_id, "pushed": recorded})
        except Exception as error:  # logged with the command that redoes it; the model is safe on disk
            self._failed(run_dir, phase, revision, error)
        finally:
            shutil.rmtree(staged.parent, ignore_errors=True)

    def _recorded(self, run_dir: Path) -> dict[str, list[str]]:
        """Phase -> the branches its pushes reached, for this repo (a record of another repo counts nothing)."""
        try:
            record = run_files.read_json(run_dir / self.RECORD)
        except (OSError, ValueError):
            return {}
        if not isinstance(record, dict) or record.get("repo_id") != self.hub.repo_id:
            return {}
        pushed = record.get("pushed")
        return dict(pushed) if isinstance(pushed, dict) else {}

    def _resume(self, run_dir: Path, phase: str, revision: str) -> str:
        return resume_command(run_dir / phase, self.hub.repo_id, revision=revision, private=self.hub.private)

    def _failed(self, run_dir: Path, phase: str, revision: str, error: Exception) -> None:
        log.error(
            "phase %s: push to %s (%s) failed: %s; the model is safe in %s; push it with:\n  %s",
            phase,
            self.hub.repo_id,
            revision,
            error,
            run_dir / phase,
            getattr(error, "resume", "") or self._resume(run_dir, phase, revision),
        )

    def _revision_failed(self, folder: Path, revision: str, error: Exception) -> None:
        log.error(
            "revision %s: push to %s failed: %s; it is safe in %s; push it with:\n  %s",
            revision,
            self.hub.repo_id,
            error,
            folder,
            getattr(error, "resume", "")
            or resume_command(folder, self.hub.repo_id, revision=revision, private=self.hub.private),
        )

    def wait(self) -> None:
        if any(not future.done() for future in self.pending):
            log.info("waiting for the push to %s to finish", self.hub.repo_id)
        for future in self.pending:
            future.result()
        self.pool.shutdown()


def resume_command(
    folder,
    repo_id: str,
    *,
    results=(),
    revision: str = "main",
    private: bool = False,
    base_model: str | None = None,
    license: str | None = None,
) -> str:
    parts = ["python", "-m", "modeling.publish", "push", str(folder), "--repo", repo_id]
    for r in results:
        parts += ["--results", str(r)]
    if revision != "main":
        parts += ["--revision", revision]
    if private:
        parts.append("--private")
    if base_model:
        parts += ["--base_model", base_model]
    if license:
        parts += ["--license", license]
    return shlex.join(parts)


# ------------------------------------------------------------------------------------ command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m modeling.publish",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("card", "write the folder a push would upload (README.md card included) and list it; uploads nothing"),
        ("push", "stage the folder and upload it to a Hub repo"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "folder",
            help="a phase folder of a train_mlm.py run (or the run folder: every phase), or a "
            "finetune.py seedN/model or seedN/adapter folder",
        )
        sub.add_argument("--repo", required=name == "push", default=None, help="Hub repo id, namespace/name")
        sub.add_argument(
            "--results",
            action="append",
            default=[],
            help="folder of finetune.py results for this encoder (repeatable); "
            "fills the evaluation table and model-index",
        )
        sub.add_argument(
            "--revision", default="main", help="branch to push to (created from main if missing); default main"
        )
        sub.add_argument(
            "--private", action="store_true", help="create the repo private (no effect on an existing repo)"
        )
        sub.add_argument(
            "--base_model",
            default=None,
            help="Hub id of the encoder a task model or adapter was fine-tuned from, when it was a local folder",
        )
        sub.add_argument(
            "--license", default=None, help="license of the weights (default: the pretraining recipe's hub.license)"
        )
        sub.add_argument(
            "--stage",
            default=None,
            help="where to write the staged folder (card: default out/hub/NAME; push: a temporary folder)",
        )
        sub.add_argument("--dry-run", action="store_true", help="stage and list only (what `card` does)")
        sub.add_argument(
            "--retries", type=int, default=4, help="retries of a transient HTTP error, with exponential backoff"
        )
        sub.add_argument(
            "--retry-wait", type=float, default=2.0, help="seconds before the first retry (doubling after)"
        )
    text = (
        "a Composer checkpoint of ModernBERT's training code (FlexBert) as a stock transformers ModernBERT folder; "
        "nothing in the checkpoint is run"
    )
    sub = commands.add_parser("import-composer", help=text, description=text)
    sub.add_argument("checkpoint", help="the Composer .pt file (e.g. ep0-ba272000-rank0.pt)")
    sub.add_argument(
        "--config",
        default=None,
        help="the run's training YAML in ModernBERT's repository format (its model.model_config block); "
        "default: the copy of the model config Composer keeps in the checkpoint",
    )
    sub.add_argument("--out", required=True, help="new folder to write (model.safetensors, config.json, tokenizer)")
    sub.add_argument(
        "--tokenizer", default=None, help="tokenizer folder to add (default: the copy Composer keeps, if any)"
    )
    sub.add_argument(
        "--max_position_embeddings", type=int, default=8192, help="longest input the folder's config allows"
    )
    return parser.parse_args(argv)


def publish(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.command == "import-composer":
        from modeling.publish.composer_import import import_composer, report

        record = import_composer(args.checkpoint, args.out, args.config, args.tokenizer, args.max_position_embeddings)
        print(report(record, Path(args.out)))
        return 0
    folder = Path(args.folder)
    options = dict(results=args.results, base_model=args.base_model, license=args.license)
    try:
        if args.command == "card" or args.dry_run:
            name = folder.resolve().name if folder.name not in ("model", "adapter") else folder.parent.parent.name
            repo_id = args.repo or f"your-namespace/{name}"
            staged = Path(args.stage or Path("out/hub") / repo_id.split("/")[-1])
            card, files = prepare(folder, repo_id, staged, revision=args.revision, **options)
            _report(card, files, f"staged (not uploaded) in {staged}", args.private)
            return 0
        push_options = dict(private=args.private, retries=args.retries, retry_wait=args.retry_wait, **options)
        if PretrainingRun(folder).summary_json.exists():
            pushed = push_run(folder, args.repo, **push_options)
        else:
            pushed = [push(folder, args.repo, revision=args.revision, stage_dir=args.stage, **push_options)]
    except PushError as error:
        print(
            f"error: {error}\nThe local folder {folder} is untouched. Resume with:\n  {error.resume}", file=sys.stderr
        )
        return 1
    except FileNotFoundError as error:
        raise ConfigError(str(error)) from None
    for result in pushed:
        headline = f"pushed to {result['repo_id']} @ {result['revision']}: {result['url']}"
        _report(result["card"], result["files"], headline, args.private)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(publish, argv)


def _report(card: Card, files: list[dict], headline: str, private: bool) -> None:
    print(f"\n{card.kind}: {headline}")
    width = max(len(f["path"]) for f in files)
    for f in files:
        print(f"  {f['path']:<{width}}  {f['bytes']:>12,} B  sha256 {f['sha256'][:12]}")
    print(f"  {len(files)} files, {sum(f['bytes'] for f in files):,} bytes")
    for name, why in card.left_out.items():
        print(f"  left out: {name} ({why})")
    for note in card.notes:
        print(f"  note: {note}")
    if card.clinical_sources and not private:
        print(
            f"  warning: trained on clinical sources ({', '.join(card.clinical_sources)}); check that their data use "
            "agreements allow sharing this model before making the repo public"
        )
