"""The training loop (§5): one loop for translation and language modelling. Token-budget batches
(§5.1), Adam with the paper's schedule (§5.3), label smoothing (§5.4), gradient accumulation,
mixed precision, data parallelism, validation, and checkpoints a killed run resumes from exactly:
SIGTERM or Ctrl-C saves before stopping, and a checkpoint that does not load is skipped for the
one before it.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import random
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aiayn.config import (
    RunConfig,
    config_differences,
    load_config,
    merge_model_config,
    save_config,
)
from aiayn.data.batching import Batch, TokenBatchSampler
from aiayn.evaluate.metrics import perplexity
from aiayn.machine import (
    bf16_slowdown,
    describe_machine,
    keep_freed_memory,
    resolve_precision,
)
from aiayn.model.config import ModelConfig
from aiayn.model.transformer import build_model
from aiayn.train.checkpoint import (
    BEST_DIR,
    CONFIG_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    CheckpointError,
    TrainerState,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_optimizer_state,
    load_trainer_state,
    load_weights,
    prepare_run_dir,
    prune_checkpoints,
    resolve_weights,
    rng_state,
    save_checkpoint,
    set_aside,
    set_rng_state,
)
from aiayn.train.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    setup_distributed,
    teardown_distributed,
)
from aiayn.train.log import MetricsLog
from aiayn.train.loss import batch_loss
from aiayn.train.parallel import (
    checkpoint_activations,
    clip_gradients,
    gather_optimizer_state,
    gather_weights,
    local_parameters,
    shard,
    shard_optimizer_state,
    without_gradient_sync,
    wrap_ddp,
)
from aiayn.train.schedule import learning_rate
from aiayn.train.stop import Abandon, Stopped, StopSignals, signal_name
from aiayn.train.task import load_task_data
from aiayn.train.validate import Validation, validate


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient; the run stopped."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk); the ones before it are intact."""


@dataclass
class UpdateResult:
    """One update's numbers, summed over all processes."""

    loss: float
    """Label-smoothed loss per target token."""
    nll: float
    target_tokens: int
    tokens: int
    """Source + target tokens (throughput counts these)."""
    lr: float
    grad_norm: float
    """Before clipping; NaN when the update was skipped."""
    finite: bool


@dataclass
class TrainResult:
    """Where a finished run stands."""

    run_dir: Path
    step: int
    epoch: int
    validation: Validation | None
    """The last validation (rank 0 only)."""
    tokens_per_second: float
    stopped_by: str | None = None
    """`SIGTERM` or `SIGINT` when a signal stopped the run early (after saving a checkpoint)."""


def train(
    config: RunConfig, *, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train the model `config` describes, writing checkpoints and metrics to `run_dir`.

    Under `torchrun` every process calls this; they form a process group and train with
    DistributedDataParallel or FSDP (`train.strategy`), and only rank 0 writes. With `resume`,
    training continues exactly from the latest checkpoint in `run_dir` that loads (or starts if
    there is none).

    SIGTERM or SIGINT (Ctrl-C; in the main thread) finishes the update under way, saves a
    checkpoint and returns a result with `stopped_by` set (under torchrun all ranks agree on the
    update to stop after); a validation under way is dropped and redone on resume.

    Raises:
        ValueError: A bad configuration, or `run_dir` already has checkpoints without `resume`.
        CheckpointError: Resuming, and no checkpoint of `run_dir` loads.
        CheckpointWriteError: A checkpoint could not be written (the earlier ones are intact).
        NonFiniteLossError: `train.max_nonfinite` updates in a row had a non-finite loss.
        Stopped: A signal came before anything was trained, or a second signal came.
    """
    ctx = setup_distributed(config.train.device)
    run_dir = Path(run_dir)
    finished = False
    trainer: Trainer | None = None
    try:
        with StopSignals() as stop:
            try:
                with stop.abandonable():  # nothing is lost by stopping while setting up
                    trainer = Trainer(
                        config, run_dir, ctx, resume=resume, progress=progress, stop=stop
                    )
                result = trainer.run()
                finished = True  # every rank ran to the same end
                return result
            except BaseException as error:
                if ctx.distributed:  # its frames hold the trainer: see below
                    traceback.clear_frames(error.__traceback__)
                if isinstance(error, Stopped):
                    raise _explained(error, run_dir) from None
                raise
    finally:
        # DDP's reducer holds the process group. Were it the last holder, freeing it would
        # destroy gloo's group with the GIL held, while a gloo thread may wait for the GIL to
        # free the tensors of the last collective: a deadlock at exit. So the trainer goes
        # first, and the group is destroyed from its own Python object, which lets go of it.
        del trainer
        gc.collect()
        teardown_distributed(synchronize=finished)


def resume_command(run_dir: Path) -> str:
    return f"aiayn train --resume --run-dir {run_dir}"


def _explained(stopped: Stopped, run_dir: Path) -> Stopped:
    name = signal_name(stopped.signum)
    if not stopped.at_once:
        message = f"stopped by {name} while setting up, before any update; nothing to save"
        return Stopped(stopped.signum, message)
    last = latest_checkpoint(run_dir)
    message = (
        f"stopped at once by a second {name}; the last complete checkpoint is "
        f"{last or 'none (nothing was saved yet)'}; continue with: {resume_command(run_dir)}"
    )
    return Stopped(stopped.signum, message, at_once=True)


def default_run_dir(config_path: str | Path) -> Path:
    """`runs/<config file name without .yaml>`."""
    return Path("runs") / Path(config_path).stem


class Trainer:
    """The state of a training run and the steps that advance it; `train` is the entry point."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        ctx: DistributedContext,
        *,
        resume: bool = False,
        progress: bool = True,
        stop: StopSignals | None = None,
    ) -> None:
        self.ctx, self.run_dir, self.progress = ctx, run_dir, progress and ctx.is_main
        self.stop, self.stopping = stop or StopSignals(), False
        if ctx.is_main:
            prepare_run_dir(run_dir, resume=resume)
        self.machine = describe_machine(ctx.device)
        self.allocator = keep_freed_memory()  # before the first large tensor
        self.precision, self.precision_reason = resolve_precision(
            config.train.precision, self.machine
        )
        if self.precision == "fp16" and ctx.device.type != "cuda":
            raise ValueError("train.precision fp16 needs a CUDA device; use auto or fp32 on a CPU")
        init_from = config.train.init_from
        if init_from is not None:
            config = config.replace(model=self._model_to_fine_tune(config, resume))
        self.data = load_task_data(
            config.data, run_dir, ctx, max_len=config.model.max_len, init_from=init_from
        )
        self.config = self._settle_config(config, resume)
        tc, data = self.config.train, self.config.data
        self.model = self._seeded_model()
        if init_from is not None and not (resume and latest_checkpoint(run_dir)):
            load_weights(self.model, resolve_weights(init_from, "best"), device=ctx.device)
        self.optimizer = self._adam()
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.precision == "fp16")
        self.sampler = TokenBatchSampler(
            self.data.train.lengths,
            data.max_tokens,
            seed=tc.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            bucket_size=data.bucket_size,
        )
        target = tc.tokens_per_update or data.max_tokens * ctx.world_size
        self.accumulate = max(1, math.ceil(target / (data.max_tokens * ctx.world_size)))
        self.state, self.saved_step = TrainerState(), None
        if resume:
            self._restore()
        self.sharded = ctx.distributed and tc.strategy == "fsdp"
        self.parallel, self.whole = self._spread_over_processes()
        self.log = MetricsLog(
            run_dir, enabled=ctx.is_main, resume_step=self.state.step if resume else None
        )
        self.window = np.zeros(5)  # loss, nll, target tokens, tokens, seconds since the last log

    def _adam(self) -> torch.optim.Optimizer:
        tc = self.config.train
        return torch.optim.Adam(
            self.model.parameters(),
            lr=0.0,
            betas=tc.betas,
            eps=tc.adam_eps,
            weight_decay=tc.weight_decay,
            fused=True,  # one kernel per tensor, not ~10
        )

    def _spread_over_processes(self) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        """After restoring into the whole model: activation checkpointing if asked, then DDP or
        FSDP under torchrun. Returns the module the updates run (the DDP wrapper, or the model
        itself) and, under FSDP, rank 0's unsharded copy that validations and checkpoints
        gather the weights into (built without drawing from the RNG a resume restored)."""
        tc, ctx = self.config.train, self.ctx
        if tc.activation_checkpointing:
            checkpoint_activations(self.model)
        if not ctx.distributed:
            return self.model, None
        if not self.sharded:
            return wrap_ddp(self.model, ctx), None
        whole = None
        if ctx.is_main:
            with torch.random.fork_rng(devices=[]):
                whole = build_model(self.config.model).to(ctx.device)
        restored = self.optimizer.state_dict()
        shard(self.model, ctx)
        self.optimizer = self._adam()  # over the shards
        if restored["state"]:
            self.optimizer.load_state_dict(shard_optimizer_state(restored, self.optimizer))
        return self.model, whole

    def _whole_model(self, *, gather: bool = True) -> torch.nn.Module | None:
        """The model with whole weights, on rank 0 (None on the others under FSDP, where this
        gathers the shards unless they are gathered already: then every process calls it)."""
        if not self.sharded:
            return self.model
        if gather:
            gather_weights(self.model, self.whole)
        return self.whole

    def run(self) -> TrainResult:
        """Update until `max_steps` (or `max_epochs`), validating and saving on the way."""
        tc = self.config.train
        self._print_start()
        bar = tqdm(
            total=tc.max_steps,
            initial=self.state.step,
            disable=not self.progress,
            unit="update",
            dynamic_ncols=True,
        )
        validation, stream = None, self._batch_stream()
        try:
            if self.state.pending_validation:  # a signal interrupted it
                validation = self.validate_and_save()
            while not self._finished() and not self._stop_agreed():
                epoch = self.sampler.epoch
                start = time.perf_counter()
                update = self.train_step([next(stream) for _ in range(self.accumulate)])
                self._record(update, time.perf_counter() - start, bar)
                step_due = update.finite and tc.eval_every and self.state.step % tc.eval_every == 0
                epoch_due = tc.eval_each_epoch and self.sampler.epoch != epoch
                if step_due or epoch_due or self._finished():  # the last update is validated
                    validation = self.validate_and_save()
                elif update.finite and tc.save_every and self.state.step % tc.save_every == 0:
                    self.save()
            if not self.stopping and self.saved_step != self.state.step:
                validation = self.validate_and_save()  # a signal drops it: redone on resume
            if self.stopping or self._stop_agreed():
                self._save_and_say_stopped(bar)
        finally:
            bar.close()
            self.log.close()
        speed = self.state.tokens / max(self.state.seconds, 1e-9)
        stopped_by = signal_name(self.stop.signum) if self.stopping else None
        return TrainResult(
            self.run_dir, self.state.step, self.sampler.epoch, validation, speed, stopped_by
        )

    def train_step(self, batches: list[Batch]) -> UpdateResult:
        """One update: forward and backward over `batches` (gradients accumulate; DDP averages
        them over processes in the last backward), scaled so that the result is the gradient of
        the mean loss per target token over all processes; then clipping and an Adam step at
        the scheduled learning rate. A non-finite loss or gradient skips the step."""
        tc, ctx, device = self.config.train, self.ctx, self.ctx.device
        local = [sum(b.n_tgt_tokens for b in batches), sum(b.n_src_tokens for b in batches)]
        n_target, n_source = all_reduce_sum([float(n) for n in local], ctx)
        scale = ctx.world_size / n_target  # DDP and FSDP average the gradients over processes
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with nullcontext() if last else without_gradient_sync(self.parallel):
                with self.autocast():
                    out = batch_loss(
                        self.parallel,
                        batch.to(device),
                        epsilon=tc.label_smoothing,
                        pad_id=self.config.model.pad_id,
                    )
                self.scaler.scale(out.loss * scale).backward()
            sums += torch.stack([out.loss.detach(), out.nll.detach()]).double()
        loss_sum, nll_sum = all_reduce_sum(sums.tolist(), ctx)
        lr = learning_rate(tc, self.state.step + 1, d_model=self.config.model.d_model)
        finite, grad_norm = math.isfinite(loss_sum), math.nan
        if finite:
            self.scaler.unscale_(self.optimizer)
            max_norm = tc.clip_norm if tc.clip_norm > 0 else math.inf
            grad_norm = clip_gradients(self.model, max_norm)
            finite = math.isfinite(grad_norm) or self.scaler.is_enabled()  # fp16: scaler skips
        if finite:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return UpdateResult(
            loss_sum / n_target,
            nll_sum / n_target,
            int(n_target),
            int(n_target + n_source),
            lr,
            grad_norm,
            finite,
        )

    def validate_and_save(self) -> Validation | None:
        """Validate on rank 0, log and print the scores, save a checkpoint (and checkpoint-best
        when the score improved)."""
        validation, best = None, False
        self.state.pending_validation = False
        whole = self._whole_model()
        if self.ctx.is_main:
            try:
                with self.stop.abandonable():
                    validation = validate(
                        whole,
                        self.data,
                        self.config,
                        device=self.ctx.device,
                        autocast=self.autocast,
                    )
            except Abandon:
                self._print(
                    f"{signal_name(self.stop.signum)} during the validation of update "
                    f"{self.state.step}: dropped, to be redone on resume"
                )
                self.state.pending_validation = True
        if validation is not None:
            self.log.append("valid", {**self._where(), **validation.record()})
            self._print(f"update {self.state.step} | {validation}")
            for source, reference, hypothesis in (validation.examples or [])[:2]:
                self._print(f"  src {source}\n  ref {reference}\n  out {hypothesis}")
            score = validation.score(self.config.train.best_metric)
            best = self.state.best_score is None or score > self.state.best_score
            if best:
                self.state.best_score, self.state.best_step = score, self.state.step
            self.state.metrics = validation.record()
        self.save(best=best, gathered=True)
        return validation

    def save(self, *, best: bool = False, gathered: bool = False) -> None:
        """Write `checkpoint-STEP/` (rank 0; every rank contributes its RNG state and, under
        FSDP, its shards), update checkpoint-best if `best`, and delete checkpoints beyond the
        last `keep_last`. `gathered`: this update's validation gathered the weights already."""
        whole = self._whole_model(gather=not gathered)
        if self.sharded:
            optimizer_state = gather_optimizer_state(self.optimizer, self.ctx.is_main)
        else:
            optimizer_state = self.optimizer.state_dict() if self.ctx.is_main else None
        self.state.sampler = self.sampler.state_dict()
        self.state.rng = all_gather_objects(rng_state(), self.ctx)
        self.state.scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        if self.ctx.is_main:
            scheduler = {
                "schedule": self.config.train.schedule,
                "step": self.state.step,
                "lr": learning_rate(
                    self.config.train, self.state.step, d_model=self.config.model.d_model
                ),
            }
            path = checkpoint_dir(self.run_dir, self.state.step)
            try:
                save_checkpoint(
                    path, whole, self.state, optimizer_state=optimizer_state, scheduler=scheduler
                )
                if best:
                    save_checkpoint(self.run_dir / BEST_DIR, whole, self.state)
                prune_checkpoints(self.run_dir, self.config.train.keep_last)
            except OSError as error:
                last = latest_checkpoint(self.run_dir)
                raise CheckpointWriteError(
                    f"could not write {path.name} in {self.run_dir}: "
                    f"{error.strerror or error}; the checkpoints before it are intact (latest: "
                    f"{last.name if last else 'none'}); make room, then continue with: "
                    f"{resume_command(self.run_dir)}"
                ) from None
        barrier(self.ctx)
        self.saved_step = self.state.step

    def _stop_agreed(self) -> bool:
        """Has a stop signal come (to any process)? Every process asks at the same points, so
        under torchrun all of them stop after the same update."""
        requested = self.stop.requested
        if self.ctx.distributed:
            requested = all_reduce_sum([float(requested)], self.ctx)[0] > 0
        self.stopping = requested
        return requested

    def _save_and_say_stopped(self, bar: tqdm) -> None:
        """Save what the updates since the last checkpoint did, and say how to go on."""
        name = signal_name(self.stop.signum) if self.stop.requested else "a signal"
        if self.saved_step != self.state.step and self.state.step > 0:
            self.save()
        bar.close()
        if self.state.step == 0:
            self._print(f"stopped by {name} before the first update; nothing to save")
            return
        self._print(
            f"stopped by {name} after update {self.state.step}: saved "
            f"{checkpoint_dir(self.run_dir, self.state.step)}; continue with: "
            f"{resume_command(self.run_dir)}"
        )

    def autocast(self) -> AbstractContextManager:
        """bf16 or fp16 autocast as `train.precision` resolved (fp32: nothing)."""
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def _batch_stream(self) -> Iterator[Batch]:
        """Training batches forever, epoch after epoch, from where the sampler stands."""
        while True:
            for indices in self.sampler:
                yield self.data.train.make_batch(indices)

    def _finished(self) -> bool:
        tc = self.config.train
        epochs_done = tc.max_epochs is not None and self.sampler.epoch >= tc.max_epochs
        return self.state.step >= tc.max_steps or epochs_done

    def _record(self, update: UpdateResult, seconds: float, bar: tqdm) -> None:
        """Count an update (or a skipped one), log every `log_every`, refresh the bar."""
        tc = self.config.train
        if not update.finite:
            self._skip(update)
            return
        self.state.nonfinite_in_a_row = 0
        self.state.step += 1
        self.state.tokens += update.tokens
        self.state.seconds += seconds
        n = update.target_tokens
        self.window += [update.loss * n, update.nll * n, n, update.tokens, seconds]
        bar.update(1)
        if self.state.step % tc.log_every == 0:
            loss, nll, n_target, n_tokens, elapsed = self.window
            record = {
                **self._where(),
                "loss": loss / n_target,
                "nll": nll / n_target,
                "ppl": perplexity(nll, n_target),
                "lr": update.lr,
                "grad_norm": update.grad_norm,
                "tokens_per_second": n_tokens / elapsed,
                "tokens": self.state.tokens,
                "seconds": self.state.seconds,
            }
            self.log.append("train", record)
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                lr=f"{update.lr:.2e}",
                tok_s=f"{record['tokens_per_second']:.0f}",
                epoch=f"{record['epoch']:.2f}",
            )
            self.window[:] = 0

    def _skip(self, update: UpdateResult) -> None:
        """Log a skipped update; stop when too many came in a row."""
        self.state.nonfinite_in_a_row += 1
        count, limit = self.state.nonfinite_in_a_row, self.config.train.max_nonfinite
        self.log.append(
            "nonfinite",
            {
                **self._where(),
                "loss": str(update.loss),
                "grad_norm": str(update.grad_norm),
                "in_a_row": count,
            },
        )
        self._print(
            f"update {self.state.step + 1}: non-finite loss {update.loss} or gradient norm "
            f"{update.grad_norm}; update skipped ({count} in a row, limit {limit})"
        )
        if count >= limit:
            last = latest_checkpoint(self.run_dir)
            raise NonFiniteLossError(
                f"{count} updates in a row had a non-finite loss or gradient (after update "
                f"{self.state.step}); stopping. The last good checkpoint is "
                f"{last or 'none (nothing was saved yet)'}. Try a lower learning rate "
                "(train.lr_scale or train.lr), train.clip_norm, or fp32/bf16 instead of fp16."
            )

    def _where(self) -> dict[str, float]:
        epoch = self.sampler.epoch + self.sampler.position / max(len(self.sampler), 1)
        return {"step": self.state.step, "epoch": round(epoch, 4)}

    def _seeded_model(self) -> torch.nn.Module:
        """The same initial weights on every rank; then each rank its own dropout masks."""
        seed = self.config.train.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        model = build_model(self.config.model).to(self.ctx.device).train()
        torch.manual_seed(seed + 1 + self.ctx.rank)
        return model

    def _restore(self) -> None:
        """Load the newest checkpoint that loads completely (weights, optimizer, sampler
        position, RNG states); each newer one that does not is named in a warning and set aside
        as `<name>.broken`."""
        candidates = list_checkpoints(self.run_dir)[::-1]
        if not candidates:
            self._print(f"no checkpoint in {self.run_dir}: starting from scratch")
            return
        skipped: list[tuple[Path, CheckpointError]] = []
        for path in candidates:
            try:
                self._load_checkpoint(path)
                break
            except CheckpointError as error:
                skipped.append((path, error))
        else:
            raise CheckpointError(
                f"none of the {len(candidates)} checkpoints in {self.run_dir} loads (newest: "
                f"{skipped[0][1]}); move them away to start again"
            )
        barrier(self.ctx)  # every rank has read them before rank 0 renames
        for broken, error in skipped:
            if self.ctx.is_main:
                aside = set_aside(broken)
                warnings.warn(
                    f"skipped {broken.name}, which does not load: {error}; moved to "
                    f"{aside.name}; resuming from {path.name}",
                    stacklevel=2,
                )
        self.saved_step = self.state.step
        self._print(f"resumed from {path} (update {self.state.step}, epoch {self.state.epoch})")

    def _load_checkpoint(self, path: Path) -> None:
        """Load one checkpoint folder into the trainer; a CheckpointError if any part of it
        does not load (a later successful load overwrites whatever this one got to)."""
        device = self.ctx.device
        state = load_trainer_state(path)
        try:
            load_weights(self.model, path, device=device)
        except FileNotFoundError as error:
            raise CheckpointError(str(error)) from None
        optimizer_state = load_optimizer_state(path, device)
        try:
            self.optimizer.load_state_dict(optimizer_state)
            for param in self.model.parameters():
                moments = self.optimizer.state.get(param, {})
                if any(
                    moments[k].shape != param.shape
                    for k in ("exp_avg", "exp_avg_sq")
                    if k in moments
                ):
                    raise ValueError("its moments have other shapes than the parameters")
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"{path / OPTIMIZER_FILE} does not fit the model's optimizer ({error})"
            ) from None
        try:
            self.sampler.load_state_dict(state.sampler)
            if state.scaler and self.scaler.is_enabled():
                self.scaler.load_state_dict(state.scaler)
            if len(state.rng) == self.ctx.world_size:
                set_rng_state(state.rng[self.ctx.rank])  # last: nothing may draw after it
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
            raise CheckpointError(f"{path / STATE_FILE}: bad training state ({error})") from None
        self.state = state

    def _model_to_fine_tune(self, config: RunConfig, resume: bool) -> ModelConfig:
        """The model section of a run that starts from `train.init_from`: that run's (or, when
        resuming, this run's own saved one), with this config's dropout."""
        saved, source = self.run_dir / CONFIG_FILE, Path(config.train.init_from)
        if not (resume and saved.is_file()) and not (source / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"train.init_from {source} is not a run directory: it has no {CONFIG_FILE}"
            )
        base = saved if resume and saved.is_file() else source / CONFIG_FILE
        return merge_model_config(config.model, load_config(base).model, source=str(source))

    def _settle_config(self, config: RunConfig, resume: bool) -> RunConfig:
        """Fit the model's vocabulary to the tokenizer, check a resumed run's config, save it."""
        tokenizer, model = self.data.tokenizer, config.model
        specials = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id)
        if specials != (model.pad_id, model.unk_id, model.bos_id, model.eos_id):
            raise ValueError(f"tokenizer special ids {specials} differ from the model's")
        vocab_size = tokenizer.vocab_size
        if config.train.init_from is not None:  # the weights' (a tokenizer may use fewer)
            vocab_size = model.vocab_size
        config = config.replace(
            model=model.replace(vocab_size=vocab_size),
            train=dataclasses.replace(config.train, resolved_precision=self.precision),
        )
        saved = self.run_dir / CONFIG_FILE
        if resume and saved.is_file():
            changed = config_differences(load_config(saved), config)
            fixed = [key for key in changed if key.split(".")[0] in ("model", "data")]
            if fixed:
                raise ValueError(f"cannot resume {self.run_dir} with a different {fixed}")
            for key in changed:
                self._print(f"resuming with a changed setting: {key} {changed[key]}")
        if self.ctx.is_main:
            save_config(config, saved)
        return config

    def _print_start(self) -> None:
        for note in self.data.notes:
            self._print(note)
        n_params = sum(p.numel() for p in self.model.parameters())
        cfg, ctx = self.config, self.ctx
        self._print(f"machine: {self.machine.summary()}; {self.allocator}")
        self._print(
            f"{cfg.model.kind} with {n_params:,} parameters on {ctx.device} x{ctx.world_size}, "
            f"precision {self.precision} ({self.precision_reason}); {len(self.data.train)} "
            f"training examples, {len(self.sampler)} batches per epoch and process, "
            f"{self.accumulate} per update; run dir {self.run_dir}"
        )
        if self.sharded:
            self._print(
                f"fsdp: {local_parameters(self.model):,} of the parameters on this process "
                "(rank 0), with their gradients and Adam's moments"
            )
        elif ctx.distributed:
            self._print("ddp: the whole model on every process")
        # no "step" key: a resumed run keeps the record of every machine it ran on, and the
        # description stays out of TensorBoard's curves
        self.log.append(
            "machine",
            {
                "at_step": self.state.step,
                **self.machine.to_dict(),
                "precision": self.precision,
                "allocator": self.allocator,
            },
        )
        if self.precision == "bf16" and not self.machine.native_bf16 and ctx.is_main:
            self._warn_slow_bf16()

    def _warn_slow_bf16(self) -> None:
        """One warning for bf16 asked for where the device only emulates it."""
        cost = ""
        if self.ctx.device.type == "cpu":
            cost = f": a bf16 matrix multiply measured {bf16_slowdown():.0f}x slower than fp32 here"
        warnings.warn(
            f"train.precision is bf16 but {self.machine.bf16_reason}{cost}; set "
            "train.precision=auto (or fp32) to train at this machine's full speed",
            stacklevel=2,
        )

    def _print(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message)
