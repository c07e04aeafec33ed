"""The default generator: a local GGUF model run in-process by llama-cpp-python (CPU, or Metal/CUDA offload)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rag.config import CACHE_DIR, Config
from rag.errors import RagError
from rag.generators.base import Piece
from rag.generators.llama_check import LlamaSettings, check, fingerprint
from rag.models import resolve
from rag.spans import TokenTrie, token_trie

GGUF_MAGIC = b"GGUF"
STALE_SECONDS = 3600  # a prefix state half-written this long ago was left by a killed process


def log_softmax_at(scores: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Log-probabilities of some tokens under the softmax of all the scores."""
    top = float(np.max(scores))
    return scores[tokens] - (top + np.log(np.sum(np.exp(scores - top))))


class TrieProcessor:
    """A llama.cpp logits processor that lets through only the tokens that continue a path of the prefix tree, and
    the end of the reply where the tree allows a stop; it records the log-probability of each token chosen."""

    def __init__(self, trie: TokenTrie, stop: list[int]):
        self.trie, self.stop = trie, stop
        self.prompt: int | None = None  # prompt length, seen at the first call
        self.node, self.logprobs = 0, []
        self._scored: dict[int, float] = {}  # the allowed tokens of the last call and their log-probabilities

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.prompt is None:
            self.prompt = len(input_ids)
        for token in input_ids[self.prompt + len(self.logprobs):]:  # chosen since the last call
            self.logprobs.append(self._scored[int(token)])
            self.node = self.trie.children[self.node][int(token)]
        allowed = list(self.trie.children[self.node])
        if self.trie.ends[self.node] or not allowed:
            allowed += self.stop
        self._scored = dict(zip(allowed, log_softmax_at(scores, allowed).tolist(), strict=True))
        kept = scores[allowed]
        scores[:] = -np.inf
        scores[allowed] = kept
        return scores

    def stop_logprob(self) -> float:
        """The log-probability of ending the reply where it ended."""
        return max(self._scored.get(t, -np.inf) for t in self.stop)


class LlamaGenerator:
    """A local GGUF model run by llama.cpp: CPU by default, GPU offload with n_gpu_layers."""

    features = frozenset({"extract", "choose", "score"})

    def __init__(self, path: Path, settings: LlamaSettings | None = None):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise RagError("llama-cpp-python is not installed: run `make setup` (see README)") from e
        path = Path(path)
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as e:  # gone, a folder, unreadable: say so rather than a traceback
            raise RagError(f"cannot read the model file {path} ({e.strerror}): run `rag models pull` or fix the "
                           "generator path") from e
        if magic != GGUF_MAGIC:
            raise RagError(f"{path} is not a GGUF model file: run `rag models pull` or fix the generator path")
        # In a child first (once per build, model and settings): a build that crashes here must not take this
        # process down with it. Any other failure shows again in the load below, which reports it.
        settings = settings or LlamaSettings()
        check(path, settings, CACHE_DIR / "checks")
        try:
            self.llm = Llama(model_path=str(path), **settings.kwargs(), verbose=False)
        except (ValueError, RuntimeError) as e:
            raise RagError(f"llama.cpp could not load {path} ({e}); run `rag models pull` to restore it") from e
        self.id = path.name
        self.n_ctx = settings.n_ctx
        self._lock = threading.Lock()  # one llama context: one generation at a time
        self._states = CACHE_DIR / "prefix" / f"{path.name}-{fingerprint(path, settings)}"

    @classmethod
    def from_config(cls, config: Config, spec: str) -> LlamaGenerator:
        """The model named by spec: a registered model pulled into models_dir, or a local .gguf file."""
        path = resolve(spec, config.models_dir, "generator")
        return cls(path, LlamaSettings.from_config(config))

    @staticmethod
    def check_config(config: Config, spec: str) -> str:
        """Smoke-test llama.cpp with the configured model and settings (in a child process); what was checked."""
        path = resolve(spec, config.models_dir, "generator")
        settings = LlamaSettings.from_config(config)
        failure = check(path, settings, CACHE_DIR / "checks")
        if failure:
            raise RagError(f"llama.cpp could not decode a test batch with {path.name} ({failure[-300:]}): run "
                           "`rag models pull` to restore the model, or check the n_* settings")
        return f"llama.cpp decoded a test batch with {path.name} ({settings}): this build runs on this machine"

    def count_tokens(self, text: str) -> int:
        """Tokens the model uses for a text."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _piece(self, token: int) -> bytes:
        return self.llm.detokenize([token])

    def extract(self, messages: list[dict], spans: list[str], max_tokens: int, whole: bool = False) -> Iterator[Piece]:
        """Greedy decoding confined to a token prefix tree of the spans' runs of words. The last piece is empty and
        carries the reply's log-probability (its tokens and its end) and its number of tokens."""
        trie = token_trie(spans, self._tokenize, self._piece, whole, limit=max_tokens)
        processor = TrieProcessor(trie, [self.llm.token_eos()])
        from llama_cpp import LogitsProcessorList

        with self._lock:
            for part in self.llm.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=0.0, top_k=1, stream=True,
                logits_processor=LogitsProcessorList([processor]),
            ):
                token = part["choices"][0]["delta"].get("content")
                if token:
                    yield Piece(token)
            # A token's log-probability is known at the next step: the totals come once the reply has ended.
            yield Piece("", sum(processor.logprobs) + processor.stop_logprob(), len(processor.logprobs) + 1)

    def _read(self, messages: list[dict], processor: Callable | None = None) -> None:
        """Read the chat prompt and write one token greedily (the lock held), showing `processor` the logits."""
        from llama_cpp import LogitsProcessorList

        processors = LogitsProcessorList([processor]) if processor else None
        for _ in self.llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0, top_k=1, stream=True,
                                                 logits_processor=processors):
            pass

    def choose(self, messages: list[dict], options: list[str]) -> dict[str, float]:
        """Read the prompt and score the first token of each option (written with or without a leading space)."""
        seen: list[np.ndarray] = []

        def capture(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            seen.append(scores.copy())
            return scores

        with self._lock:
            self._read(messages, capture)
        firsts = {option: sorted({self._tokenize(form)[0] for form in (option, " " + option)}) for option in options}
        out = {}
        for option, tokens in firsts.items():
            out[option] = float(np.logaddexp.reduce(log_softmax_at(seen[0], tokens)))
        return out

    def score(self, messages: list[dict], replies: list[str]) -> list[list[float]]:
        """Read the prompt (cached when the reader has just asked the same), then each reply in one batch from the
        prompt's last token, keeping the logits of every position: the log-probability of each token and of the
        end. The prompt's cache is left as a prefix the next call reuses."""
        prompt: list[int] = []

        def capture(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            prompt[:] = prompt or input_ids.tolist()  # the chat template's tokens, as llama-cpp-python built them
            return scores

        llm, end = self.llm, self.llm.token_eos()
        out = []
        with self._lock:
            self._read(messages, capture)
            at = len(prompt) - 1
            # llama-cpp-python evaluates with logits for the last token only: its context and batch (pinned
            # version) decode each reply with all of them. A reply longer than a batch is scored in part.
            for reply in replies:
                tokens = self._tokenize(reply)[: llm.n_batch - 1]
                batch = [prompt[-1], *tokens]
                llm._ctx.kv_cache_seq_rm(-1, at, -1)
                llm._batch.set_batch(batch, at, True)
                llm._ctx.decode(llm._batch)
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), llm.n_vocab()))
                out.append([float(log_softmax_at(row, [t])[0]) for row, t in zip(logits, [*tokens, end], strict=True)])
            llm._ctx.kv_cache_seq_rm(-1, at, -1)
            llm.n_tokens, llm._requires_eval = at, True  # the prompt but its last token: the next call replays it
        return out

    def prefill(self, messages: list[dict]) -> None:
        """Read a prompt prefix into llama.cpp's cache: restored from the state an earlier process saved for this
        model, build, settings and prompt (a few MB in the cache folder, read in milliseconds), or read and saved."""
        key = hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:16]
        path = self._states.with_name(f"{self._states.name}-{key}.state")
        with self._lock:
            fresh = self.llm.n_tokens == 0
            if fresh and self._restore(path):
                return
            self._read(messages)
            if fresh or not path.exists():  # none yet, or one that could not be loaded: replaced
                self._save(path)

    def _restore(self, path: Path) -> bool:
        """Load a saved state into the context; False (nothing loaded) when there is none or it does not fit."""
        import llama_cpp

        if not path.is_file():
            return False
        capacity = self.llm.n_ctx()
        tokens = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        if not llama_cpp.llama_state_seq_load_file(self.llm._ctx.ctx, str(path).encode(), 0, tokens, capacity,
                                                   ctypes.byref(count)):
            self.llm.n_tokens = 0  # the next prompt is read whole, its cache cleared first
            return False
        self.llm.input_ids[: count.value] = tokens[: count.value]
        self.llm.n_tokens = count.value  # llama-cpp-python reuses the longest common prefix of the next prompt
        return True

    def _save(self, path: Path) -> None:
        """Save the context's state for the next process, atomically, and remove this model's older states and the
        half-written ones of killed processes. A cache: when its folder cannot be written, nothing is saved."""
        import llama_cpp

        n = self.llm.n_tokens
        tokens = (llama_cpp.llama_token * n)(*self.llm.input_ids[:n].tolist())
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            if llama_cpp.llama_state_seq_save_file(self.llm._ctx.ctx, str(temporary).encode(), 0, tokens, n):
                os.replace(temporary, path)
                for old in path.parent.glob(f"{self.id}-*.state"):
                    if old != path:
                        old.unlink(missing_ok=True)
                # Another process may be writing its state now (13 MB, well under a second): only old ones go.
                for stale in path.parent.glob(f"{self.id}-*.tmp"):
                    if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                        stale.unlink(missing_ok=True)
            temporary.unlink(missing_ok=True)

    def generate(self, messages: list[dict], max_tokens: int, stop: list[str], temperature: float) -> Iterator[str]:
        """Stream the chat reply. The unchanged prompt prefix (system + example) stays in llama.cpp's KV cache."""
        with self._lock:
            for part in self.llm.create_chat_completion(
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=1 if temperature == 0 else 40,
                stop=stop,
                stream=True,
            ):
                token = part["choices"][0]["delta"].get("content")
                if token:
                    yield token
