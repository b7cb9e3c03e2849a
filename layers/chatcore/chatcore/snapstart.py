"""Lambda SnapStart: what runs before the snapshot and after each restore.

With SnapStart (template.yaml: the sessions, tool worker, continuation and callback functions, invoked through their
alias ``live``), Lambda runs a function's init once, when a version is published, snapshots the execution
environment's memory, and resumes every new environment of that version from the snapshot. Two things follow.

* Work done before the snapshot is free for every restore. ``before_snapshot`` does what each environment would
  otherwise do on its first request, where it is the same for all of them and needs no network, no secret and no
  setting beyond the environment: import the modules the handler loads lazily (the Redis client when a cache is
  configured, Mangum, the app's pages, the turn engine's parts), build the pydantic validators that are deferred at
  import, load botocore's models of the AWS services the function uses (by building clients that are thrown
  away: no credentials are resolved and no connection is opened before the snapshot) and the default container's
  botocore session (which, without a client, has resolved nothing); then collect the garbage and freeze the rest
  (``gc.freeze``: out of every restored environment's collections).
* State captured in the snapshot is shared by every restored environment. ``after_restore`` makes it theirs: no
  AWS, Redis or LLM client of the snapshot is used (the default container's, if any was built, are renewed:
  credentials resolved again, new connections; its session, if it built no client, is kept), and ``random`` is
  re-seeded (retry jitter: restored copies must not back off in lockstep). Ids, tokens and secrets come from
  ``secrets`` (``chatcore.models.new_id``), i.e. the kernel's random source, which Lambda keeps unique per restored
  environment; nothing in chatcore derives one from ``random``.

Settings and secrets are not read before the snapshot: a secret read then would live in every snapshot until the
next publish, past a rotation. The hooks are registered with ``snapshot_restore_py``, a module of Lambda's managed
Python runtime (absent elsewhere: then nothing is registered); they are plain functions the tests call.
"""

from __future__ import annotations

import gc
import importlib
import random
from collections.abc import Iterable

from pydantic import BaseModel

from chatcore.config import ConfigError, environment_settings


def _pydantic_models(root: type[BaseModel] = BaseModel) -> Iterable[type[BaseModel]]:
    for cls in root.__subclasses__():
        yield cls
        yield from _pydantic_models(cls)


def build_deferred_models() -> int:
    """Build the validators of every chatcore pydantic model deferred at import (``defer_build``); how many."""
    built = 0
    for model in list(_pydantic_models()):
        if model.__module__.startswith("chatcore.") and not model.__pydantic_complete__:
            built += bool(model.model_rebuild(raise_errors=False))
    return built


def before_snapshot(modules: Iterable[str] = ()) -> None:
    """Prime the environment that the snapshot will hold (see the module's docstring)."""
    for name in (*modules, "encodings.idna"):  # idna: the first connection encodes its host name with it
        importlib.import_module(name)
    try:
        settings = environment_settings()  # the environment only: secrets are read after the restore
    except ConfigError:
        return  # the first request reports it (503 naming the setting)
    if settings.redis_url or settings.redis_url_secret_arn:
        importlib.import_module("redis.asyncio")
    build_deferred_models()
    services = ["dynamodb"]
    services += ["secretsmanager"] if settings.secret_arns() else []
    services += ["stepfunctions"] if settings.state_machine_arn else []
    services += ["ssm"] if settings.system_prompt_parameter else []
    from chatcore.container import default_container  # built, not its settings: nothing read yet

    default_container().aws.prepare(services)  # no client is kept, no credential resolved
    gc.collect()  # what priming left behind, out of the snapshot
    gc.freeze()  # and what it built, out of every restored environment's collections (chatcore.coldstart)


def after_restore() -> None:
    """Make the restored environment's state its own (see the module's docstring)."""
    random.seed()  # from os.urandom
    from chatcore.container import built_default_container

    container = built_default_container()
    if container is not None:
        container.renew()


def register(modules: Iterable[str] = ()) -> bool:
    """Register the hooks with the Lambda runtime; False where there is no SnapStart runtime (local runs, tests)."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]  # Lambda's managed runtime only
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, tuple(modules))
    register_after_restore(after_restore)
    return True
