"""The one supervised fine-tuning path every built-in backend shares (TRL's SFTTrainer).

It reads top to bottom: model, adapter, data, arguments, trainer, train, evaluate, save. Variants
override a hook rather than fork the loop: QLoRA changes ``load_model``, LoRA+ supplies
``create_optimizer``, PiSSA changes ``peft_config`` and ``save``, full fine-tuning returns no
``peft_config``, and the masked-diffusion backend swaps the loader, the trainer's loss and the
answer sampler while borrowing the adapter hooks of LoRA, LoRA+ or PiSSA.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from core import jobs
from core.device import resolve_device
from trainers import distributed
from trainers.config import LoraTrainConfig, TrainConfig
from trainers.errors import TrainerError
from trainers.metrics import (
    JobProgressCallback,
    count_parameters,
    curves_from_log_history,
    reset_peak_memory,
    run_metrics,
    score_answers,
)
from trainers.protocol import TrainResult


def load_chats(path: Path | None) -> list[list[dict]]:
    """A snapshot split's chats; an absent or empty file is no chats."""
    import json

    if path is None or not path.is_file():
        return []
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line)["messages"] for line in lines if line.strip()]


def _setup_data(train_file: Path, eval_file: Path | None):
    """The snapshot's chats as TRL's conversational prompt/completion pairs.

    Prompt/completion gives loss on the assistant's answer (and its end-of-turn token) only, and
    works with any chat template, where ``assistant_only_loss`` needs {% generation %} markers.
    """
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()  # per-map bars for a few dozen rows are noise in the CLI

    def pairs(chats: list[list[dict]]) -> Dataset | None:
        rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in chats]
        return Dataset.from_list(rows) if rows else None

    return pairs(load_chats(train_file)), pairs(load_chats(eval_file))


def _truncate(dataset, max_length: int):
    """Cut every per-token column to ``max_length``: padding-free batches don't truncate."""
    if dataset is None:
        return None

    def cut(example: dict) -> dict:
        n = len(example["input_ids"])
        return {k: v[:max_length] for k, v in example.items() if isinstance(v, list) and len(v) == n
                and k not in ("prompt", "completion")}

    return dataset.map(cut)


def _quiet_progress():
    from transformers.trainer_callback import ProgressCallback

    class StepProgress(ProgressCallback):
        """tqdm's bar without the log dicts it prints between steps; the registry keeps those."""

        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            return None

    return StepProgress()


class SftBackend:
    """Supervised fine-tuning with LoRA on a frozen base; subclasses change one step each."""

    name = "sft"
    config_class: type = LoraTrainConfig
    base_kind = "causal"  # the registry's ModelKind of the bases this backend can train
    peft_task_type: str | None = "CAUSAL_LM"

    # -- hooks ---------------------------------------------------------------------------------

    def preflight(self, model_path: str, config: Any) -> None:
        """Cheap checks before any row is written: the model config loads, target modules exist,
        the logging backend asked for is installed."""
        import importlib.util

        report_to = getattr(config, "report_to", "none")
        package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(report_to)
        if package and importlib.util.find_spec(package) is None:
            raise TrainerError(f"report_to={report_to} needs the {package} package; "
                               f"pip install {package}, or drop report_to")
        module_names = self.module_names(model_path)
        targets = getattr(config, "target_modules", None)
        if isinstance(targets, list):
            leaves = {n.rsplit(".", 1)[-1] for n in module_names} | set(module_names)
            missing = [t for t in targets if t not in leaves]
            if missing:
                linear = sorted({n.rsplit(".", 1)[-1] for n in module_names
                                 if n.rsplit(".", 1)[-1].endswith("proj")})
                raise TrainerError(f"target module(s) {', '.join(missing)} not found in "
                                   f"{model_path}; try 'all-linear' or some of: "
                                   f"{', '.join(linear) or 'see the model card'}")

    def module_names(self, model_path: str) -> list[str]:
        return _module_names(model_path)

    def load_base(self, model_path: str, **kwargs: Any):
        """The base model from ``model_path``; also what PiSSA reloads to check its conversion."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)

    def load_model(self, model_path: str, config: Any, device: str):
        return self.load_base(model_path, dtype=_dtype(device))

    def load_tokenizer(self, model_path: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_path)

    def peft_config(self, config: Any):
        """The PEFT config to wrap the base with; None trains the base itself."""
        from peft import LoraConfig

        return LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
            target_modules=config.target_modules, use_rslora=config.use_rslora,
            task_type=self.peft_task_type,
        )

    def wrap_model(self, model, config: Any, workspace: Path):
        peft_config = self.peft_config(config)
        if peft_config is None:
            return model
        from peft import get_peft_model

        if config.gradient_checkpointing:
            model.enable_input_require_grads()  # frozen embeddings would cut the graph otherwise
        return get_peft_model(model, peft_config)

    def create_optimizer(self, model, config: Any) -> torch.optim.Optimizer | None:
        """None lets the trainer build its default AdamW."""
        return None

    def callbacks(self, config: Any) -> list:
        return []

    def make_trainer(self, config: Any, tokenizer, **kwargs: Any):
        """The Trainer that runs the loop; a new objective is a Trainer with its own loss."""
        from trl import SFTTrainer

        return SFTTrainer(processing_class=tokenizer, **kwargs)

    def score(self, model, tokenizer, chats: list[list[dict]], config: Any) -> dict[str, Any]:
        """ROUGE-L and exact match of the model's answers to the test questions."""
        return score_answers(model, tokenizer, chats, max_new_tokens=config.max_new_tokens)

    def use_padding_free(self, config: Any, device: str) -> bool:
        """Padding-free batches by default on CUDA only (see TrainConfig.padding_free)."""
        return config.padding_free if config.padding_free is not None \
            else device.startswith("cuda")

    def save(self, model, tokenizer, output_dir: Path, workspace: Path) -> dict[str, Any]:
        """Write the artifacts; returns extra metrics to record."""
        model.save_pretrained(output_dir)  # PEFT: adapter_config.json + adapter_model.safetensors
        tokenizer.save_pretrained(output_dir)  # so the adapter dir renders chats on its own
        return {}

    # -- the loop ------------------------------------------------------------------------------

    def train(
        self,
        model_path: str,
        train_file: Path,
        eval_file: Path | None,
        output_dir: Path,
        config: Any,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
    ) -> TrainResult:
        from transformers import EarlyStoppingCallback
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        device = resolve_device()
        if config.low_memory:
            lower_memory(device)
        if not device.startswith("cuda"):
            score_labelled_positions_only()
        output_dir.mkdir(parents=True, exist_ok=True)
        workspace = checkpoint_dir or Path(tempfile.mkdtemp(prefix=".ckpt-", dir=output_dir))
        workspace.mkdir(parents=True, exist_ok=True)
        tokenizer = self.load_tokenizer(model_path)
        if tokenizer.pad_token is None:  # many Hub bases ship without one; padding is masked
            tokenizer.pad_token = tokenizer.eos_token
        torch.manual_seed(config.seed)  # the adapter init must repeat exactly on --resume
        model = self.wrap_model(self.load_model(model_path, config, device), config, workspace)
        train_data, eval_data = _setup_data(train_file, eval_file)
        if train_data is None:
            raise TrainerError(f"{train_file} has no examples; rebuild the snapshot")
        padding_free = self.use_padding_free(config, device)
        args = _setup_args(config, workspace, device, has_eval=eval_data is not None,
                           padding_free=padding_free)
        callbacks = list(self.callbacks(config))
        main = distributed.is_main()  # under a launch, only the main process reports and saves
        if jobs.reporting() and main:  # started as a job: the parent draws step/total/loss/ETA
            callbacks.append(JobProgressCallback())
        if config.early_stopping_patience and eval_data is not None:
            callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
        trainer = self.make_trainer(
            config, tokenizer, model=model, args=args, train_dataset=train_data,
            eval_dataset=eval_data, callbacks=callbacks,
            optimizers=(self.create_optimizer(model, config), None),
        )
        trainer.remove_callback(PrinterCallback)  # the registry records the logs
        if trainer.pop_callback(ProgressCallback) is not None:
            trainer.add_callback(_quiet_progress())
        if padding_free:
            trainer.train_dataset = _truncate(trainer.train_dataset, config.max_length)
            trainer.eval_dataset = _truncate(trainer.eval_dataset, config.max_length)
        trainable, total = count_parameters(trainer.model)

        checkpoint = _last_checkpoint(workspace) if resume else None
        if resume and checkpoint is None:
            raise TrainerError(f"no checkpoint to resume from in {workspace}")
        start_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
        reset_peak_memory(device)
        started = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        wall = time.perf_counter() - started
        steps_run = trainer.state.global_step - start_step
        loss_curve, eval_curve = curves_from_log_history(trainer.state.log_history)
        if not loss_curve:  # fewer steps than logging_steps: the run's mean is all there is
            loss_curve = [{"step": trainer.state.global_step,
                           "loss": round(float(output.training_loss), 4)}]

        metrics = run_metrics(
            trainable=trainable, total=total, device=device, wall_seconds=wall,
            samples=steps_run * config.batch_size,
            tokens=_tokens_this_session(trainer, start_step), steps=trainer.state.global_step,
            loss_curve=loss_curve,
        )
        metrics["train_loss_mean"] = round(float(output.training_loss), 4)
        metrics["total_flos"] = float(trainer.state.total_flos)
        metrics["resumed_from_step"] = start_step or None
        metrics["batching"] = "padding_free" if padding_free else "padded, grouped by length"
        metrics["processes"] = distributed.current().world_size
        metrics["global_batch_size"] = args.per_device_train_batch_size \
            * distributed.current().world_size
        if eval_curve:
            metrics["eval_curve"] = eval_curve
        if eval_data is not None:
            eval_loss = float(trainer.evaluate()["eval_loss"])
            metrics["eval_loss"] = round(eval_loss, 4)
            metrics["perplexity"] = round(math.exp(min(eval_loss, 50.0)), 3)
        if not main:
            return TrainResult(metrics=metrics, loss_curve=loss_curve)
        test_chats = load_chats(eval_file)[: config.generate_examples]
        if test_chats:
            trainer.model.eval()
            metrics.update(self.score(trainer.model, tokenizer, test_chats, config))
        metrics.update(self.save(trainer.model, tokenizer, output_dir, workspace))
        if checkpoint_dir is None:
            shutil.rmtree(workspace, ignore_errors=True)
        return TrainResult(metrics=metrics, loss_curve=loss_curve)


# Vocabulary entries per tile of TRL's fused LM head. TRL's 32,768 suits a GPU; on CPU each tile
# and its fp32 temporaries (tokens x 32,768 x 4 bytes, several at once) were 0.5 GB of a LoRA
# run's peak on SmolLM2, with no speed gained over 4,096.
CPU_HEAD_TILE = 4096


def score_labelled_positions_only() -> None:
    """Make TRL's fused LM head score only the positions that have a label, on CPU too.

    TRL scores every position (prompt and padding included) off CUDA, because on compiled
    backends a varying number of positions would recompile the kernel each batch. Eager CPU
    has nothing to recompile. There, TRL 1.16's tile function over SmolLM2's head took 1.40 s
    forward and backward for 640 positions against 0.53 s for their labelled half, and ten
    LoRA steps on SmolLM2 went from 32.5 s to 27.3 s. The loss is the same sum over the same
    labelled tokens.
    """
    import trl.trainer.utils as trl_utils

    # TRL reads this module-level name when it decides; no public option sets it.
    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None or hasattr(decide, "trl_decide"):  # not there, or patched already
        return

    def compact_on_cpu(device: torch.device) -> bool:
        return torch.device(device).type == "cpu" or decide(device)

    compact_on_cpu.trl_decide = decide  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu


def lower_memory(device: str) -> None:
    """What ``low_memory`` does besides gradient checkpointing (see TrainConfig.low_memory)."""
    from core.memory import return_freed_memory

    return_freed_memory()
    if not device.startswith("cuda"):
        import trl.trainer.utils as trl_utils

        # TRL reads this module constant on every forward; no public option sets it.
        if isinstance(getattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None), int):
            trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_HEAD_TILE


def _dtype(device: str) -> torch.dtype:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _module_names(model_path: str) -> list[str]:
    """The model's module names, built on the meta device so no weights are read."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        model_config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise TrainerError(f"cannot load a model from {model_path!r} ({str(exc).splitlines()[0]})"
                           "; check the path with `loraforge base list`") from exc
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(model_config)
    return [name for name, _ in model.named_modules() if name]


def _last_checkpoint(workspace: Path) -> Path | None:
    """The newest complete checkpoint; one cut short by a kill has no trainer_state.json yet."""
    done = [p for p in workspace.glob("checkpoint-*")
            if (p / "trainer_state.json").is_file() and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _tokens_this_session(trainer, start_step: int) -> int:
    seen = int(trainer.state.num_input_tokens_seen)
    if not start_step:
        return seen
    steps = max(trainer.state.global_step, 1)
    return int(seen * (trainer.state.global_step - start_step) / steps)


def _setup_args(config: TrainConfig, workspace: Path, device: str, *, has_eval: bool,
                padding_free: bool):
    from trl import SFTConfig

    evaluate = has_eval and config.eval_steps is not None
    early_stop = evaluate and config.early_stopping_patience is not None
    # Keeping the best model needs a checkpoint at every evaluation.
    save_steps = config.eval_steps if early_stop else config.save_steps
    on_gpu = device.startswith("cuda")
    return SFTConfig(
        output_dir=str(workspace),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        # batch_size is the global batch: a launch of N processes splits it N ways.
        per_device_train_batch_size=config.batch_size // distributed.current().world_size,
        per_device_eval_batch_size=config.batch_size,
        # Padding-free batches are not truncated by TRL; the backend truncates the dataset.
        max_length=None if padding_free else config.max_length,
        padding_free=padding_free,
        # Without padding-free, batches of similar lengths waste the least compute on padding.
        train_sampling_strategy="random" if padding_free else "group_by_length",
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        lr_scheduler_type="cosine",
        logging_steps=config.logging_steps,
        seed=config.seed,
        completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,  # TRL turns it on by default
        include_num_input_tokens_seen="non_padding",
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps if evaluate else None,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=2,
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss" if early_stop else None,
        greater_is_better=False if early_stop else None,
        report_to=config.report_to,
        disable_tqdm=not config.progress_bar,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        dataloader_pin_memory=False,
    )
