"""LoRA with PEFT and TRL's SFTTrainer. Reads top to bottom: model, data, trainer, train, save."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from registry.settings import resolve_device
from trainers.config import LoraTrainConfig
from trainers.metrics import LossCurveCallback, count_parameters, reset_peak_memory, run_metrics
from trainers.protocol import TrainResult


def _setup_model(model_path: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:  # many Hub bases ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
        else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    return model, tokenizer


def _setup_data(train_file: Path, eval_file: Path | None):
    """The snapshot's chats as TRL's conversational prompt/completion pairs.

    Prompt/completion gives loss on the assistant's answer (and its end-of-turn token) only, and
    works with any chat template, where ``assistant_only_loss`` needs {% generation %} markers.
    """
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()  # per-map bars for a few dozen rows are noise in the CLI

    def split_turns(example: dict) -> dict:
        messages = example["messages"]
        return {"prompt": messages[:-1], "completion": messages[-1:]}

    files = {"train": str(train_file)}
    if eval_file is not None and eval_file.is_file() and eval_file.stat().st_size > 0:
        files["eval"] = str(eval_file)
    data = load_dataset("json", data_files=files)
    data = data.map(split_turns, remove_columns=["messages"])
    return data["train"], data.get("eval")


def _setup_peft(config: LoraTrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=config.target_modules, task_type="CAUSAL_LM",
    )


def _setup_args(config: LoraTrainConfig, output_dir: Path, device: str):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        max_length=config.max_length,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        lr_scheduler_type="cosine",
        logging_steps=config.logging_steps,
        seed=config.seed,
        completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,  # TRL turns it on by default
        include_num_input_tokens_seen="non_padding",
        save_strategy="no",  # runs are short; the adapter is saved once at the end
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not device.startswith("cuda"),
        bf16=device.startswith("cuda") and torch.cuda.is_bf16_supported(),
        dataloader_pin_memory=False,
    )


class LoraBackend:
    """Low-rank adapters on a frozen base (Hu et al., 2021)."""

    name = "lora"
    config_class = LoraTrainConfig

    def train(
        self,
        model_path: str,
        train_file: Path,
        eval_file: Path | None,
        output_dir: Path,
        config: LoraTrainConfig,
    ) -> TrainResult:
        from transformers.trainer_callback import PrinterCallback
        from trl import SFTTrainer

        device = resolve_device()
        model, tokenizer = _setup_model(model_path, device)
        train_data, eval_data = _setup_data(train_file, eval_file)
        losses = LossCurveCallback()
        trainer = SFTTrainer(
            model=model,
            args=_setup_args(config, output_dir, device),
            train_dataset=train_data,
            processing_class=tokenizer,
            peft_config=_setup_peft(config),
            callbacks=[losses],
        )
        trainer.remove_callback(PrinterCallback)  # our callback records the logs; keep stdout clean
        trainable, total = count_parameters(trainer.model)

        reset_peak_memory(device)
        started = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - started

        metrics = run_metrics(
            trainable=trainable, total=total, device=device, wall_seconds=wall,
            samples=trainer.state.global_step * config.batch_size,
            tokens=int(trainer.state.num_input_tokens_seen), steps=trainer.state.global_step,
            loss_curve=losses.curve,
        )
        metrics["train_loss_mean"] = round(float(output.training_loss), 4)
        if eval_data is not None and len(eval_data) > 0:
            metrics["eval_loss"] = round(float(trainer.evaluate(eval_data)["eval_loss"]), 4)

        trainer.model.save_pretrained(output_dir)  # adapter_config.json + adapter_model.safetensors
        tokenizer.save_pretrained(output_dir)  # so the adapter dir renders chats on its own
        (output_dir / "train_metrics.json").write_text(json.dumps(
            {"config": config.to_dict(), "metrics": metrics, "loss_curve": losses.curve}, indent=1))
        return TrainResult(metrics=metrics, loss_curve=losses.curve)
