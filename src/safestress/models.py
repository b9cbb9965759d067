"""Load a causal LM from a hub id, a local directory or a GGUF file, with its chat formatting.

* GGUF files are dequantised by ``transformers`` once and cached as safetensors under the
  safestress cache, keyed by the file's content, so later loads take a fraction of a second.
* dtype/device ``auto``: bfloat16 on a CUDA GPU that supports it, float32 on the CPU.
* Prompts are formatted with the model's chat template (an optional system prompt), or passed as
  raw text with ``template="raw"`` for base models and ToxiGen-style continuations. A chat model
  without a template is an error unless the user supplies one.
* ``trust_remote_code`` is never enabled unless the caller asks for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safestress.errors import SafestressError
from safestress.paths import cache_dir
from safestress.textfile import read_text

log = logging.getLogger(__name__)
_CONVERTED_MARK = "safestress-converted.json"


@dataclass
class LoadedModel:
    """A model, its tokenizer and everything about them that determines outputs.

    ``model`` may be ``None`` until :meth:`ensure_weights` is called: a sweep whose rows are all
    stored needs only the tokenizer and config to compute its keys, and never loads the weights.
    """

    model: Any
    tokenizer: Any
    name: str
    identity: dict[str, Any]
    template: str = "chat"  # "chat" or "raw"
    system_prompt: str | None = None
    config: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ensure_weights(self) -> Any:
        """Load the weights if they are not loaded yet; return the model."""
        if self.model is None:
            loader = self.extra.pop("weights_loader")
            self.model = loader()
        return self.model

    @property
    def n_layers(self) -> int:
        from safestress.sites import num_layers

        if self.model is not None:
            return num_layers(self.model)
        cfg = self.config
        return int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def format(self, prompt: str) -> str:
        """The text the model sees for a user ``prompt``."""
        if self.template == "raw":
            return prompt
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def fingerprint(self) -> dict[str, Any]:
        """Hashed into every store key: model content, dtype, template and system prompt."""
        fp = {**self.identity, "template": self.template, "system_prompt": self.system_prompt}
        if self.template == "chat":
            fp["chat_template_sha"] = hashlib.sha256(str(self.tokenizer.chat_template).encode()).hexdigest()[:16]
        return fp

    def sites(self, pattern: str | list[str] = "*") -> list[str]:
        """Canonical sites of this model matching ``pattern`` (see :func:`safestress.sites.select_sites`)."""
        from safestress.sites import all_sites, select_sites

        if pattern == "*":
            return all_sites(self.n_layers)
        return select_sites(pattern, self.n_layers)


def _file_digest(path: Path, chunk: int = 8 << 20) -> str:
    """Fast content identity: size + SHA-256 of the first and last 8 MiB."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:24]


def _dir_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in {".safetensors", ".bin", ".json", ".model", ".gguf"} and f.is_file():
            h.update(f.name.encode())
            h.update(_file_digest(f).encode())
    return h.hexdigest()[:24]


def resolve_device(device: str = "auto") -> str:
    """``auto`` → the GPU if there is one; any other name must parse and exist on this machine, so
    that a typo or a missing GPU is a one-line error before anything is generated or stored."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SafestressError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N (or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SafestressError(f"device '{device}' asked for, but this machine has no usable CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise SafestressError(f"device '{device}' asked for, but this machine has {n} GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SafestressError(f"device '{device}' asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise SafestressError(f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N (or mps)")
    return device


# share of one GPU's free memory the weights may take before a model is spread over several GPUs:
# the rest is for the KV cache and activations of a batch
FIT_SHARE = 0.6


def spread_over_gpus(weight_bytes: int, free: Sequence[int]) -> bool:
    """Whether to place a model across GPUs (``device_map="auto"``): only when there are several
    and its weights would take more than FIT_SHARE of the first one's free memory. A model that
    fits stays whole on one GPU, where no layer waits for a transfer."""
    return len(free) > 1 and weight_bytes > FIT_SHARE * free[0]


def _free_gpu_memory() -> list[int]:
    import torch

    return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]


def _weight_bytes(config: Any, dtype: Any) -> int:
    """The size of a model's weights in ``dtype``, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()) * torch.tensor([], dtype=dtype).element_size()


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise SafestressError(f"unknown dtype '{dtype}'; known: auto, float32, bfloat16, float16") from None


def _drop_gguf_quantization(directory: Path) -> None:
    """Remove the ``gguf`` quantization entry that the GGUF loader leaves in the config. The saved
    weights are plain floats, but with the entry transformers reloads the model as "quantized",
    and its Trainer (fine-tuning, the QuadA defence) then refuses to train it. Outputs are
    unchanged (checked on SmolLM2: identical greedy text)."""
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("quantization_config", {}).get("quant_method") == "gguf":
        del cfg["quantization_config"]
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _convert_gguf(path: Path, trust_remote_code: bool) -> Path:
    """Dequantise a GGUF once into a safetensors directory in the cache; return that directory."""
    target = cache_dir("models", f"{path.stem}-{_file_digest(path)}")
    if (target / _CONVERTED_MARK).exists():
        _drop_gguf_quantization(target)  # copies converted before the config was cleaned
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from safestress.progress import working

    log.info("converting %s to safetensors (once) in %s", path, target)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our line says what happens; transformers' bars would interleave
    # the GGUF reader draws its own tqdm bar, which no transformers switch turns off: silence it here
    import transformers.modeling_gguf_pytorch_utils as gguf_reader

    reader_bar = getattr(gguf_reader, "tqdm", None)
    if reader_bar is not None:
        gguf_reader.tqdm = functools.partial(reader_bar, disable=True)
    try:
        with working(f"converting {path.name} to safetensors (once)"):
            try:
                tok = AutoTokenizer.from_pretrained(
                    path.parent, gguf_file=path.name, trust_remote_code=trust_remote_code
                )
                src = AutoModelForCausalLM.from_pretrained(
                    path.parent, gguf_file=path.name, trust_remote_code=trust_remote_code
                )
            except Exception as exc:  # transformers raises many types for unreadable files
                raise SafestressError(f"cannot load GGUF file {path}: {str(exc).splitlines()[0]}") from None
            # A GGUF-loaded model refuses save_pretrained; rebuild a plain copy with the same weights.
            plain = AutoModelForCausalLM.from_config(src.config, trust_remote_code=trust_remote_code)
            plain.load_state_dict(src.state_dict())
            plain.generation_config = src.generation_config
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # runs converting at once stay apart
            shutil.rmtree(tmp, ignore_errors=True)  # a crashed run's leftover under a reused pid
            plain.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    finally:
        if reader_bar is not None:
            gguf_reader.tqdm = reader_bar
        if bars:
            hf_logging.enable_progress_bar()
    _drop_gguf_quantization(tmp)
    (tmp / _CONVERTED_MARK).write_text(json.dumps({"source": str(path)}))
    _publish_conversion(tmp, target)
    return target


def _publish_conversion(tmp: Path, target: Path) -> None:
    """Move a finished conversion into place. Two runs may convert one file at once (two sweeps
    started together on a new machine): the first to finish wins and the other's copy is dropped."""
    if (target / _CONVERTED_MARK).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if target.exists():  # an unmarked folder: left by a version that did not mark its copies
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / _CONVERTED_MARK).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def load_model(
    spec: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    revision: str | None = None,
    template: str = "chat",
    chat_template: str | None = None,
    system_prompt: str | None = None,
    trust_remote_code: bool = False,
    weights: bool = True,
) -> LoadedModel:
    """Load ``spec`` (hub id, local directory, or ``.gguf`` file) for inference.

    ``chat_template`` (a Jinja string or a path to a file holding one) replaces or supplies the
    tokenizer's template. ``template="raw"`` feeds prompts as plain text. With ``weights=False``
    only the tokenizer and config are read; :meth:`LoadedModel.ensure_weights` loads the rest.
    """
    if template not in ("chat", "raw"):
        raise SafestressError(f"unknown template mode '{template}'; known: chat, raw")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, identity = _source(spec, revision, trust_remote_code)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SafestressError(f"cannot load model '{spec}': {str(exc).splitlines()[0]}") from None

    def load_weights() -> Any:
        spread = dev == "cuda" and spread_over_gpus(_weight_bytes(config, torch_dtype), _free_gpu_memory())
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source,
                revision=revision,
                dtype=torch_dtype,
                trust_remote_code=trust_remote_code,
                **({"device_map": "auto"} if spread else {}),
            )
        except Exception as exc:  # transformers and safetensors raise many types for unreadable weights
            raise SafestressError(f"cannot load the weights of model '{spec}': {_first_line(exc)}") from None
        return (model if spread else model.to(dev)).eval()

    _prepare_tokenizer(tokenizer, spec, template, chat_template)
    identity["dtype"] = str(torch_dtype).removeprefix("torch.")
    _require_adapter(config, spec)
    lm = LoadedModel(
        None,
        tokenizer,
        name=identity["model"],
        identity=identity,
        template=template,
        system_prompt=system_prompt,
        config=config,
        extra={"weights_loader": load_weights},
    )
    check_template(lm, spec)
    if weights:
        lm.ensure_weights()
    return lm


def _source(spec: str, revision: str | None, trust_remote_code: bool) -> tuple[Any, dict[str, Any]]:
    """Where ``spec``'s files are read from, and what identifies them in stored keys: a file's or
    folder's content digest, a hub id's revision. A GGUF file is converted (and cached) first."""
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise SafestressError(f"model file not found: {spec}")
        return _convert_gguf(path.resolve(), trust_remote_code), {"model": path.stem, "digest": _file_digest(path)}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise SafestressError(f"model directory {spec} has no config.json")
        check_weight_files(path, spec)
        return path, {"model": path.name, "digest": _dir_digest(path)}
    if path.exists():
        raise SafestressError(f"model path {spec} is neither a directory nor a .gguf file")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec, {"model": spec, "revision": revision or "main"}
    raise SafestressError(f"model not found: '{spec}' is not a file, a directory or a hub id (owner/name)")


def _prepare_tokenizer(tokenizer: Any, spec: str, template: str, chat_template: str | None) -> None:
    """Left padding for batched generation, a pad token, and the chat template a chat run needs
    (given as a Jinja string or a file), refused early when there is none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        tpl_path = Path(chat_template).expanduser()
        tokenizer.chat_template = read_text(tpl_path, "chat template") if tpl_path.is_file() else chat_template
    if template == "chat" and not tokenizer.chat_template:
        raise SafestressError(
            f"model '{spec}' has no chat template; pass --chat-template (a Jinja string or file) "
            "or --template raw for plain continuation"
        )


def _require_adapter(config: Any, spec: str) -> None:
    """Refuse an architecture without a site adapter before its weights are read."""
    from safestress.sites import ADAPTERS

    if config.model_type not in ADAPTERS:
        raise SafestressError(
            f"architecture '{config.model_type}' of '{spec}' has no site adapter; "
            f"supported: {', '.join(sorted(ADAPTERS))}"
        )


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def check_weight_files(path: Path, spec: str) -> None:
    """A local model folder must hold weights, and every safetensors file's header must read: a
    folder without weights or a truncated download fails before the store is touched. Reading a
    header costs microseconds; the tensors themselves are read only when the weights are needed."""
    files = [f for f in sorted(path.iterdir()) if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    if not files:
        raise SafestressError(f"model directory {spec} holds no weights (no *.safetensors or *.bin file)")
    from safetensors import safe_open

    for f in files:
        if f.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(f), "pt") as fh:
                fh.keys()
        except Exception as exc:  # safetensors raises its own error type for a damaged header
            raise SafestressError(f"weights file {f} is damaged or truncated: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def check_template(lm: LoadedModel, spec: str) -> None:
    """Render one prompt now: a chat template that does not parse, or that raises (many check the
    roles, e.g. no system turn), fails here in one line instead of in the middle of a sweep."""
    try:
        lm.format("Hello.")
    except Exception as exc:  # jinja2's TemplateError family, and anything a template raises
        raise SafestressError(f"the chat template of '{spec}' fails on a test prompt: {_first_line(exc)}") from None


def chat_tokenizer(tokenizer_object: Any, chat_template: str, specials: list[str], **tokens: str) -> Any:
    """Wrap a ``tokenizers.Tokenizer`` as a left-padding HF tokenizer with a chat template.

    ``specials`` are the pad, bos and end tokens followed by any role markers; used by the lab
    and by the tiny test models, whose tokenizers are built in code.
    """
    from transformers import PreTrainedTokenizerFast

    pad, bos, eos, *roles = specials
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        additional_special_tokens=roles,
        **tokens,
    )
    fast.chat_template = chat_template
    fast.padding_side = "left"
    return fast


def wrap_model(model: Any, tokenizer: Any, name: str, **kwargs: Any) -> LoadedModel:
    """Use an already-loaded model/tokenizer pair (notebooks, tests, trained models) with safestress."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    digest = hashlib.sha256()
    for t in model.state_dict().values():
        digest.update(t.detach().float().cpu().numpy().tobytes()[:4096])
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return LoadedModel(
        model.eval(),
        tokenizer,
        name=name,
        config=model.config,
        identity={"model": name, "digest": digest.hexdigest()[:24], "dtype": dtype},
        **kwargs,
    )
