"""`train_mlm.py prepare`: a recipe's sources into its token store, once; and the check that a store is the
one a recipe needs before training reads it.

    python train_mlm.py prepare RECIPE [--num_proc N] [--rebuild] [--key.path VALUE ...]

The tokenizer comes first (trained on training documents only, or the recipe's own), then every source the
phases read (modeling.data.store). A store matches a recipe when it holds the same tokenizer (by
fingerprint), the same held-out fraction and the same source options; when a source's files are on this
machine they must also be the files the store was prepared from (names, sizes, modification times). Where
the files are not on this machine the store alone is trusted: a store prepared on one machine trains on
another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from modeling.common import run_files
from modeling.common.errors import ConfigError, DataError
from modeling.common.loading import load_tokenizer
from modeling.data.contamination import EvalDocument, EvalNgrams
from modeling.data.ngrams import Exclusion
from modeling.data.sources import resolve_files
from modeling.data.store import (
    FileFingerprint,
    PreparePart,
    Store,
    StoreFolder,
    plan_parts,
    prepare_store,
    sampled_sha256,
    spec_record,
    tokenizer_fingerprint,
)
from modeling.data.store_lock import WriteLock, clear_store
from modeling.pretrain.recipe import Recipe
from modeling.pretrain.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


# Reads a task config's validation and test documents: modeling.finetune.dataset.evaluation_documents, handed in by
# the script (pretraining never imports fine-tuning). Needed only by a recipe with store.exclude_tasks.
EvaluationReader = Callable[[str, str | None], list[EvalDocument]]


def prepare(
    recipe: Recipe,
    num_proc: int | None = None,
    rebuild: bool = False,
    evaluation_documents: EvaluationReader | None = None,
) -> Store:
    """The recipe's store, prepared where missing (or all over again with `rebuild`), and checked."""
    run_files.not_a_file("store.path", recipe.store_dir())
    folder = StoreFolder(recipe.store_dir())
    if rebuild or not folder.is_complete():
        run_files.writable_folder("store.path", folder.folder)  # a complete store may be read-only
        # Under the store's write lock: no run reads the store while it changes, no other prepare writes it.
        with WriteLock(folder.folder):
            if rebuild:
                log.info("store %s: removing it to prepare it again", folder.folder)
                clear_store(folder.folder)
            _with_tokenizer(recipe)
            prepare_store(
                folder.folder,
                recipe.used_sources(),
                recipe.holdout.fraction,
                num_proc=num_proc,
                part_bytes=recipe.store.part_mb * 2**20,
                tokenizer_settings=tokenizer_settings(recipe),
                exclusion=evaluation_exclusion(recipe, evaluation_documents),
                exclusion_tasks=recipe.store.excluded_tasks(),
            )
        return open_store(recipe)
    store = open_store(recipe)
    if store.manifest.exclusion is not None and evaluation_documents is not None:
        # the same task names may hold other documents now (other data_dir, files, split): compare them
        exclusion = evaluation_exclusion(recipe, evaluation_documents)
        if exclusion.fingerprint() != store.manifest.exclusion.fingerprint:
            raise ConfigError(
                f"store {folder.folder}: left out other evaluation documents than store.exclude_tasks reads now "
                "(their files, data_dir or split changed); prepare it again with --rebuild"
            )
    log.info("store %s: complete, %s training tokens", folder.folder, f"{store.manifest.tokens():,}")
    return store


def evaluation_exclusion(recipe: Recipe, evaluation_documents: EvaluationReader | None) -> Exclusion | None:
    """What the recipe's store leaves out (store.exclude_tasks), under the store's tokenizer; None for none."""
    tasks = recipe.store.excluded_tasks()
    if not tasks:
        return None
    if evaluation_documents is None:
        raise ConfigError(
            "store.exclude_tasks: no reader of task configs was given; pass evaluation_documents="
            "modeling.finetune.dataset.evaluation_documents (train_mlm.py prepare does)"
        )
    documents = [d for config, data_dir in tasks for d in evaluation_documents(config, data_dir)]
    tokenizer = load_tokenizer(StoreFolder(recipe.store_dir()).tokenizer_dir)
    exclusion = EvalNgrams.tokenized(documents, tokenizer, n=recipe.store.exclude_ngram).exclusion()
    log.info(
        "store %s: leaving out %d evaluation documents of %s and every document sharing a %d-token run with them",
        recipe.store_dir(),
        len(documents),
        ", ".join(config for config, _ in tasks),
        recipe.store.exclude_ngram,
    )
    return exclusion


def store_pipeline(recipe: Recipe, evaluation_documents: EvaluationReader | None = None) -> tuple[list, int]:
    """For running the parts on several machines with another datatrove executor (Slurm, Ray): puts the
    tokenizer in the store, then returns (pipeline, tasks) for the executor. When every task is done,
    `train_mlm.py prepare RECIPE` finds every part prepared and writes the manifest."""
    folder = _with_tokenizer(recipe)
    specs = recipe.used_sources()
    parts = plan_parts(specs, recipe.store.part_mb * 2**20)
    exclusion = evaluation_exclusion(recipe, evaluation_documents)
    return [PreparePart(folder.folder.absolute(), specs, parts, recipe.holdout.fraction, exclusion)], len(parts)


def _with_tokenizer(recipe: Recipe) -> StoreFolder:
    """The store's folder, holding the recipe's tokenizer (trained now if the recipe trains one)."""
    folder = StoreFolder(recipe.store_dir())
    folder.folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(recipe)
    if folder.tokenizer_dir.exists():  # a prepare that was killed: continue only with the same tokenizer
        kept = load_tokenizer(folder.tokenizer_dir)
        if tokenizer_fingerprint(kept) != tokenizer_fingerprint(tokenizer):
            raise ConfigError(
                f"store.path={folder.folder}: a partial store made with another tokenizer; "
                "pass --rebuild to prepare it again, or choose another store.path"
            )
    else:
        try:
            with run_files.atomic_folder(folder.tokenizer_dir) as tmp:
                tokenizer.save_pretrained(tmp)
        except OSError as error:
            raise DataError(f"{folder.tokenizer_dir}: cannot write it ({error.strerror or error})") from None
    return folder


def tokenizer_settings(recipe: Recipe) -> dict:
    """What decides the tokenizer: a trained one's settings, or the name of the one loaded."""
    if recipe.tokenizer.train_vocab_size:
        return {
            "train_vocab_size": recipe.tokenizer.train_vocab_size,
            "train_max_documents": recipe.tokenizer.train_max_documents,
        }
    return {"path": recipe.tokenizer.path or recipe.model.init}


def open_store(recipe: Recipe) -> Store:
    """The recipe's store, refused with one line when it was made for other sources or another tokenizer."""
    store = Store(recipe.store_dir())
    where = f"store {store.folder.folder}"
    again = "prepare it again (`train_mlm.py prepare RECIPE --rebuild`) or choose another store.path"
    manifest = store.manifest
    if manifest.holdout_fraction != recipe.holdout.fraction:
        raise ConfigError(
            f"{where}: holds out {manifest.holdout_fraction} of the documents, the recipe "
            f"{recipe.holdout.fraction}; {again}"
        )
    for spec in recipe.used_sources():
        recorded = manifest.sources.get(spec.name)
        if recorded is None:
            raise ConfigError(f"{where}: holds no source '{spec.name}'; {again}")
        ours = {k: v for k, v in spec_record(spec).items() if k != "path"}
        theirs = {k: v for k, v in recorded.spec.items() if k != "path"}
        if ours != theirs:
            changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            raise ConfigError(f"{where}: source '{spec.name}' was prepared with other {', '.join(changed)}; {again}")
        _check_files(where, spec, recorded.files, again)
    kept_out, tasks = manifest.exclusion, recipe.store.excluded_tasks()
    wanted = ([c for c, _ in tasks], [d for _, d in tasks], recipe.store.exclude_ngram)
    mismatch = (kept_out.tasks, kept_out.data_dirs, kept_out.ngram) != wanted if kept_out else bool(tasks)
    if mismatch:
        found = f"left out {', '.join(kept_out.tasks)} ({kept_out.ngram}-token runs)" if kept_out else "left out none"
        asked = f"{', '.join(wanted[0])} ({wanted[2]}-token runs)" if tasks else "none"
        raise ConfigError(
            f"{where}: {found} of the evaluation sets; the recipe's store.exclude_tasks asks for {asked}; {again}"
        )
    if recipe.tokenizer.train_vocab_size:
        if manifest.tokenizer_settings != tokenizer_settings(recipe):
            raise ConfigError(
                f"{where}: its tokenizer was trained with {manifest.tokenizer_settings}, the recipe asks for "
                f"{tokenizer_settings(recipe)}; {again}"
            )
    else:
        _check_tokenizer(where, recipe, manifest.tokenizer_sha256, again)
    return store


def _check_files(where: str, spec, recorded: list[FileFingerprint], again: str):
    """The source's files on this machine must be those the store was prepared from: the same names and sizes,
    and either the same modification times or, for a copy (new times), the same sampled contents."""
    if spec.format == "hf":
        return
    try:
        files = resolve_files(spec)
    except DataError:
        log.info(
            "%s: the files of source '%s' are not on this machine; training from the store alone", where, spec.name
        )
        return
    names = [Path(f.path).name for f in recorded]
    if [Path(p).name for p in files] != names:
        raise DataError(
            f"{where}: source '{spec.name}' now reads {len(files)} files ({', '.join(Path(p).name for p in files[:3])}"
            f"{', ...' if len(files) > 3 else ''}), it was prepared from {len(names)} ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}); {again}"
        )
    copies = 0
    for path, then in zip(files, recorded, strict=True):
        now = FileFingerprint.of(path, sample=False)
        if now.bytes != then.bytes:
            raise DataError(f"{where}: {path} holds {now.bytes:,} bytes, {then.bytes:,} when prepared; {again}")
        if now.mtime_ns == then.mtime_ns:
            continue
        if then.sampled_sha256 is None or sampled_sha256(path, now.bytes) != then.sampled_sha256:
            why = "its contents differ" if then.sampled_sha256 else "the store's manifest keeps no sample to compare"
            raise DataError(f"{where}: {path} changed since it was prepared (modified later; {why}); {again}")
        copies += 1
    if copies:
        log.info(
            "%s: %d files of source '%s' have other modification times than when prepared (copied?) but the same "
            "sampled contents; taken as the same files",
            where,
            copies,
            spec.name,
        )


def _check_tokenizer(where: str, recipe: Recipe, fingerprint: str, again: str):
    try:
        tokenizer = build_tokenizer(recipe)
    except (OSError, ValueError):  # offline, or not on this machine: the store's own tokenizer is used
        log.info("%s: the recipe's tokenizer cannot be loaded here; using the store's", where)
        return
    if tokenizer_fingerprint(tokenizer) != fingerprint:
        raise ConfigError(f"{where}: its token ids come from another tokenizer than the recipe's; {again}")
