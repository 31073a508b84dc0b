"""Tokenizers through HF ``transformers`` (from tokenizer.json, or converted from a GGUF file).

A GGUF conversion takes seconds, so the converted tokenizer is cached under
``$SAGELLM_CACHE`` (default ``~/.cache/sagellm``), keyed by the GGUF file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sagellm.core.errors import ModelLoadError


def cache_dir() -> Path:
    return Path(os.environ.get("SAGELLM_CACHE", Path.home() / ".cache" / "sagellm"))


class Tokenizer:
    """Text <-> token ids, and chat templating when the model ships a template."""

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer

    @property
    def eos_token_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=True))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def encode_chat(self, user_text: str, system: str | None = None) -> list[int]:
        """Token ids of a one-turn chat, ending with the assistant generation prompt."""
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": user_text})
        return self.encode_messages(msgs)

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a chat (``[{"role", "content"}, ...]``) through the model's template,
        ending with the assistant generation prompt."""
        out = self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def encode_prompt(self, text: str, chat: bool | None = None) -> list[int]:
        """Chat-templated when the model has a template (and ``chat`` is not False)."""
        use_chat = self.has_chat_template if chat is None else chat
        return self.encode_chat(text) if use_chat else self.encode(text)


def load_tokenizer(source: Path, override: str | None = None) -> Tokenizer:
    """Tokenizer for a checkpoint folder or GGUF file (``override``: a tokenizer folder)."""
    from transformers import AutoTokenizer

    if override is not None:
        return Tokenizer(AutoTokenizer.from_pretrained(override, local_files_only=True))
    if source.is_dir():
        try:
            return Tokenizer(AutoTokenizer.from_pretrained(str(source), local_files_only=True))
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{source}: no usable tokenizer: {err}") from None
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cached = cache_dir() / "tokenizers" / key[:16]
    if (cached / "tokenizer.json").is_file():
        return Tokenizer(AutoTokenizer.from_pretrained(str(cached), local_files_only=True))
    try:
        tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except Exception as err:
        raise ModelLoadError(f"{source}: cannot build a tokenizer from the GGUF: {err}") from None
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        tok.save_pretrained(str(tmp))
        if not cached.exists():
            tmp.replace(cached)
    except OSError:
        pass  # a read-only cache only costs the conversion next time
    return Tokenizer(tok)
