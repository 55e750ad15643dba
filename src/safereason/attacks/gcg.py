"""Greedy Coordinate Gradient (GCG; Zou et al. 2023, arXiv:2307.15043) on a transformers model.

Each step takes the gradient of the target loss with respect to the one-hot suffix tokens, samples
``search_width`` candidates that each swap ``n_replace`` suffix tokens for one of the ``topk`` most promising
ones, scores every candidate with a forward pass, and keeps the best. The loop, its knobs and their defaults follow
nanoGCG (GraySwanAI/nanoGCG nanogcg/gcg.py @ d4a20a8b4a12c3ee814a77a61423b7bdcd151f82), which safereason does not
call: under transformers 5 nanoGCG's prefix cache fails (it indexes a ``DynamicCache`` like a tuple), and it
renders the chat itself, so a reasoning prefill (``<think>\\n``, a thinking control) could not be part of the
optimised input. Here the input is the text ``eval`` renders (chat template, system prompt, think_prefill,
thinking control, prefill), split at the suffix.

Defaults are nanoGCG's: ``early_stop=False``; the suffix appended directly to the user turn (nanoGCG appends
``{optim_str}`` to ``messages[-1]["content"]`` when the conversation does not hold it); the best suffix is the
lowest-loss one among the optimised steps' (``losses.index(min(losses))``), never the initial string. Options:

* ``early_stop_on="any"`` (nanoGCG's criterion, used when ``early_stop``): stop after the step in which any
  evaluated candidate's argmax over the target positions equals the target ids (the initial suffix's evaluation
  sets the flag too, so one step still runs); ``"kept"``: stop as soon as the kept suffix reaches the target
  (checked before each step, so an initial suffix that already does is returned after 0 steps), and return it;
* ``template="{prompt} {optim_str}"`` puts a space before the suffix; whitespace before ``{optim_str}`` is
  optimised with the suffix, so a BPE tokenizer's " x" tokens keep their space;
* ``best_includes_init=True`` lets the initial suffix be returned when no step beats its loss.

One deliberate difference from nanoGCG, so that what is optimised is what ``eval`` runs: candidates are kept only
when the *whole rendered prompt* re-tokenises to the same ids (nanoGCG checks the suffix alone), so the suffix
renders back to exactly the optimised ids. With the direct append, an initial suffix whose first token merges
with the behaviour's last word (``...autox x``) fails this check: a clear error names ``--template``.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from safereason.attacks.base import AttackError, AttackResult, config_dict
from safereason.records import Prompt

#: nanoGCG GCGConfig defaults (nanogcg/gcg.py @ d4a20a8b4a12c3ee814a77a61423b7bdcd151f82): num_steps,
#: optim_str_init (20 x's), search_width, topk, n_replace
NANOGCG_STEPS = 250
NANOGCG_SUFFIX_INIT = "x x x x x x x x x x x x x x x x x x x x"
NANOGCG_SEARCH_WIDTH = 512
NANOGCG_TOPK = 256
NANOGCG_N_REPLACE = 1
#: nanoGCG's placement (gcg.py @ d4a20a8, ``GCG.run``): ``{optim_str}`` appended directly to the user turn
DEFAULT_TEMPLATE = "{prompt}{optim_str}"
#: our earlier default, an option: a space before the suffix (optimised with it, see the module docstring)
SPACED_TEMPLATE = "{prompt} {optim_str}"
OPTIM = "{optim_str}"
#: ``early_stop_on``: "any" is nanoGCG's (``_compute_candidates_loss_original`` sets ``stop_flag`` when
#: ``torch.any(torch.all(argmax(shift_logits) == shift_labels, dim=-1))``), "kept" ours
EARLY_STOP_RULES = ("any", "kept")


@dataclass(frozen=True)
class GCGAttackConfig:
    """GCG's knobs (nanoGCG's names in comments where ours differ)."""

    steps: int = NANOGCG_STEPS  # num_steps
    suffix_init: str = NANOGCG_SUFFIX_INIT  # optim_str_init
    search_width: int = NANOGCG_SEARCH_WIDTH
    topk: int = NANOGCG_TOPK
    n_replace: int = NANOGCG_N_REPLACE
    batch_size: int | None = None  # candidates per forward pass; None: all of them
    template: str = DEFAULT_TEMPLATE  # the user turn; {prompt} is the behaviour, {optim_str} the suffix (appended
    # directly when absent, as nanoGCG)
    early_stop: bool = False  # nanoGCG's default
    early_stop_on: str = "any"  # any: nanoGCG's criterion; kept: the kept suffix reaches the target
    best_includes_init: bool = False  # nanoGCG: the best is among the optimised steps' suffixes only
    allow_non_ascii: bool = False
    add_space_before_target: bool = False
    prefix_cache: bool = True  # use_prefix_cache: the tokens before the suffix are run once per behaviour
    seed: int = 0

    @property
    def user_template(self) -> str:
        """The template with the suffix placed: nanoGCG's rule appends ``{optim_str}`` when it is absent."""
        return self.template if OPTIM in self.template else self.template + OPTIM

    def check(self) -> None:
        for name in ("steps", "search_width", "topk", "n_replace"):
            if getattr(self, name) < 1:
                raise AttackError(f"GCG {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise AttackError(f"GCG batch size must be at least 1, got {self.batch_size}")
        if self.template.count(OPTIM) > 1 or "{prompt}" not in self.template:
            raise AttackError(f"GCG template must hold {{prompt}} and at most one {OPTIM} (appended when absent), "
                              f"got {self.template!r}")
        if self.early_stop_on not in EARLY_STOP_RULES:
            raise AttackError(f"GCG early_stop_on must be one of {', '.join(EARLY_STOP_RULES)}, got "
                              f"{self.early_stop_on!r}")
        if not self.suffix_init.strip():
            raise AttackError("GCG suffix init must not be empty")


def check_backend(backend: Any) -> None:
    """GCG needs the weights: a transformers backend with a text-only causal LM (one clear error otherwise)."""
    name = getattr(backend, "name", type(backend).__name__)
    if name != "transformers" or not hasattr(backend, "model") or not hasattr(backend, "tokenizer"):
        raise AttackError(f"GCG needs the model's gradients: use --backend transformers, not {name!r} (for other "
                          "backends, attack a local copy and evaluate the adversarial file there: transfer)")
    if getattr(backend, "vision", None) is not None:
        raise AttackError(f"GCG attacks text-only models; {backend.model_name!r} is a vision-language model")


@dataclass
class _Problem:
    """One behaviour's fixed parts: the rendered text around the suffix, their ids and embeddings."""

    before_str: str
    after_str: str
    user_head: str  # the user turn before the optimised text
    user_tail: str  # the user turn after it
    before_ids: list[int]
    after_ids: list[int]
    target_ids: Any  # (1, T) tensor
    embeds: dict[str, Any] = field(default_factory=dict)
    cache: Any = None


class GCG:
    """GCG on one backend: the not-allowed tokens are found once and shared by every behaviour."""

    def __init__(self, backend: Any, cfg: GCGAttackConfig, render: Callable[[str], str]) -> None:
        cfg.check()
        check_backend(backend)
        self.backend, self.cfg, self.render = backend, cfg, render
        self.model, self.tok = backend.model, backend.tokenizer
        self.embed = self.model.get_input_embeddings()
        self.keep_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.not_allowed = _not_allowed_ids(self.tok, self.embed.num_embeddings, cfg.allow_non_ascii,
                                            self.embed.weight.device)

    # -- setting up one behaviour -------------------------------------------------------------------------

    def problem(self, prompt: str, target: str) -> tuple[_Problem, list[int]]:
        """The fixed parts of the input and the initial suffix ids, checked to tokenise as ``eval`` will."""
        import torch

        user = self.cfg.user_template.replace("{prompt}", prompt)
        head, tail = user.split(OPTIM)
        sep = head[len(head.rstrip()):]  # whitespace before the suffix is optimised with it
        head = head[: len(head) - len(sep)]
        rendered = self.render(head + OPTIM + tail)
        if rendered.count(OPTIM) != 1:
            raise AttackError(f"the rendered prompt holds {rendered.count(OPTIM)} copies of {OPTIM}, not 1 (does "
                              "the behaviour, system prompt or prefill contain it?)")
        before_str, after_str = rendered.split(OPTIM)
        init_ids = self.backend.encode(sep + self.cfg.suffix_init)
        target_text = (" " + target) if self.cfg.add_space_before_target else target
        device = self.embed.weight.device
        p = _Problem(before_str, after_str, head, tail, self.backend.encode(before_str),
                     self.backend.encode(after_str),
                     torch.tensor([self.backend.encode(target_text)], device=device, dtype=torch.long))
        if not self._renders_back([init_ids], p)[0]:
            raise AttackError(f"the initial suffix {self.cfg.suffix_init!r} does not tokenise the same inside the "
                              "rendered prompt (it merges with the text around it); pick another --suffix-init or "
                              f"--template (e.g. {SPACED_TEMPLATE!r})")
        with torch.no_grad():
            for k, ids in (("before", p.before_ids), ("after", p.after_ids)):
                p.embeds[k] = self.embed(torch.tensor([ids], device=device, dtype=torch.long))
            p.embeds["target"] = self.embed(p.target_ids)
            if self.cfg.prefix_cache and p.before_ids:
                p.cache = self.model(inputs_embeds=p.embeds["before"], use_cache=True).past_key_values
        return p, init_ids

    def _renders_back(self, cands: list[list[int]], p: _Problem) -> list[bool]:
        """Whether each suffix, decoded and put back into the rendered prompt, re-tokenises to the same ids."""
        texts = [p.before_str + self.backend.decode(c) + p.after_str for c in cands]
        encoded = self.tok(texts, add_special_tokens=False)["input_ids"]
        return [list(e) == p.before_ids + list(c) + p.after_ids for e, c in zip(encoded, cands, strict=True)]

    # -- one step's pieces ------------------------------------------------------------------------------

    def _forward(self, p: _Problem, suffix_embeds: Any) -> Any:
        """Logits over the target positions for a batch of suffix embeddings."""
        import torch

        n, t = suffix_embeds.shape[0], p.target_ids.shape[1]
        parts = [suffix_embeds, p.embeds["after"].expand(n, -1, -1), p.embeds["target"].expand(n, -1, -1)]
        # only the target positions go through the LM head (the vocabulary projection dominates a step otherwise)
        kw: dict[str, Any] = {"logits_to_keep": t + 1} if self.keep_logits else {}
        if p.cache is not None:
            cache = copy.deepcopy(p.cache)
            if n > 1:
                cache.batch_repeat_interleave(n)
            out = self.model(inputs_embeds=torch.cat(parts, dim=1), past_key_values=cache, use_cache=True, **kw)
        else:
            out = self.model(inputs_embeds=torch.cat([p.embeds["before"].expand(n, -1, -1), *parts], dim=1), **kw)
        return out.logits[:, -t - 1:-1, :]

    def token_gradient(self, p: _Problem, ids: list[int]) -> Any:
        """d loss / d one-hot(suffix): (n_suffix, vocab)."""
        import torch

        onehot = torch.nn.functional.one_hot(torch.tensor([ids], device=self.embed.weight.device),
                                             num_classes=self.embed.num_embeddings).to(self.model.dtype)
        onehot.requires_grad_()
        logits = self._forward(p, onehot @ self.embed.weight)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), p.target_ids.reshape(-1))
        return torch.autograd.grad(outputs=[loss], inputs=[onehot])[0][0]

    def sample(self, ids: list[int], grad: Any, gen: Any) -> Any:
        """``search_width`` candidates, each with ``n_replace`` positions swapped for a top-k token (nanoGCG's
        ``sample_ids_from_grad``, drawing from a seeded generator)."""
        import torch

        cfg, n = self.cfg, len(ids)
        grad = grad.clone()
        grad[:, self.not_allowed] = float("inf")
        topk_ids = (-grad).topk(cfg.topk, dim=1).indices
        base = torch.tensor(ids, device=grad.device).repeat(cfg.search_width, 1)
        pos = torch.argsort(torch.rand((cfg.search_width, n), generator=gen, device=gen.device).to(grad.device))
        pos = pos[..., : cfg.n_replace]
        pick = torch.randint(0, cfg.topk, (cfg.search_width, cfg.n_replace, 1), generator=gen, device=gen.device)
        vals = torch.gather(topk_ids[pos], 2, pick.to(grad.device)).squeeze(2)
        return base.scatter_(1, pos, vals)

    def losses(self, p: _Problem, cands: Any) -> tuple[Any, Any]:
        """Mean target cross-entropy of each candidate, and whether its greedy continuation is the target."""
        import torch

        size = self.cfg.batch_size or len(cands)
        out_loss, out_hit = [], []
        with torch.no_grad():
            i = 0
            while i < len(cands):
                batch = cands[i:i + size]
                try:
                    logits = self._forward(p, self.embed(batch))
                except torch.OutOfMemoryError:
                    if size == 1:
                        raise
                    size = max(1, size // 2)  # as nanoGCG's find_executable_batch_size: halve and retry
                    continue
                labels = p.target_ids.expand(len(batch), -1)
                ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
                out_loss.append(ce.float().mean(dim=1))
                out_hit.append((logits.argmax(-1) == labels).all(dim=1))
                i += len(batch)
        return torch.cat(out_loss), torch.cat(out_hit)

    # -- the loop ---------------------------------------------------------------------------------------

    def step(self, p: _Problem, ids: list[int], gen: Any, step: int, pid: str) -> tuple[dict[str, Any], list[int]]:
        """One GCG step from the kept suffix ``ids``: its record and the new kept suffix."""
        import torch

        t0 = time.perf_counter()
        grad = self.token_gradient(p, ids)
        with torch.no_grad():
            cands = self.sample(ids, grad, gen)
        keep = self._renders_back(cands.tolist(), p)
        cands = cands[torch.tensor(keep, device=cands.device)]
        if len(cands) == 0:
            raise AttackError(f"{pid}: no GCG candidate re-tokenises to itself at step {step}; try "
                              "another --suffix-init or --template")
        loss, hits = self.losses(p, cands)
        j = int(loss.argmin())
        new = cands[j].tolist()
        rec = {"step": step, "loss": float(loss[j]), "candidates": len(cands), "target_reached": bool(hits[j]),
               "any_target_reached": bool(hits.any()), "suffix": self.backend.decode(new),
               "seconds": round(time.perf_counter() - t0, 4)}
        return rec, new

    def run(self, prompt: Prompt, target: str, *, on_step: Callable[[dict[str, Any]], None] | None = None
            ) -> AttackResult:
        import torch

        cfg = self.cfg
        p, ids = self.problem(prompt.prompt, target)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        with torch.no_grad():
            loss0, hit0 = self.losses(p, torch.tensor([ids], device=self.embed.weight.device))
        init = (float(loss0[0]), ids, bool(hit0[0]))
        kept_rule = cfg.early_stop_on == "kept"
        flag = init[2]  # nanoGCG's stop_flag: the initial buffer's evaluation sets it too
        history: list[dict[str, Any]] = []
        path: list[tuple[float, list[int], bool]] = []  # each step's kept suffix
        stopped = cfg.early_stop and kept_rule and init[2]
        for step in range(1, cfg.steps + 1):
            if stopped:
                break
            rec, ids = self.step(p, ids, gen, step, prompt.id)
            history.append(rec)
            path.append((rec["loss"], ids, rec["target_reached"]))
            if on_step is not None:
                on_step(rec)
            flag = flag or rec["any_target_reached"]
            stopped = cfg.early_stop and (rec["target_reached"] if kept_rule else flag)
        best_loss, best_ids, best_hit = choose_best(init, path, kept_stop=stopped and kept_rule,
                                                    include_init=cfg.best_includes_init)
        suffix = self.backend.decode(best_ids)
        return AttackResult(
            id=prompt.id, behavior=prompt.prompt, prompt=p.user_head + suffix + p.user_tail, target=target,
            attack="gcg", category=prompt.category, label=prompt.label, config=config_dict(cfg), seed=cfg.seed,
            steps=len(history), score=best_loss, history=history,
            extra={"suffix": suffix, "suffix_ids": best_ids, "initial_loss": init[0], "target_reached": best_hit,
                   "stopped_early": bool(stopped), "prompt_text": p.before_str + suffix + p.after_str})


Kept = tuple[float, list[int], bool]  # (loss, suffix ids, whether its greedy continuation is the target)


def choose_best(init: Kept, path: list[Kept], *, kept_stop: bool = False, include_init: bool = False) -> Kept:
    """The suffix a run returns. nanoGCG (gcg.py @ d4a20a8, end of ``GCG.run``): the first lowest loss among the
    steps' kept suffixes (``losses.index(min(losses))``), never the initial one. ``kept_stop`` (early stop on the
    kept suffix): the suffix that reached the target. ``include_init``: the initial suffix competes (first on ties).
    Without any step (a kept-rule stop before step 1) the initial suffix is all there is."""
    if kept_stop:
        return path[-1] if path else init
    pool = [init, *path] if include_init or not path else path
    return min(pool, key=lambda k: k[0])


def run_gcg(backend: Any, prompt: Prompt | str, target: str, cfg: GCGAttackConfig, *,
            render: Callable[[str], str] | None = None) -> AttackResult:
    """Attack one behaviour. ``render`` maps a user turn to the exact prompt text ``eval`` feeds the model (the
    default: the backend's chat template alone)."""
    if isinstance(prompt, str):
        prompt = Prompt(id="behaviour", prompt=prompt)
    return GCG(backend, cfg, render or (lambda u: backend.render_prompt(u))).run(prompt, target)


def _not_allowed_ids(tok: Any, n_embed: int, allow_non_ascii: bool, device: Any) -> Any:
    """Token ids a suffix may not use: nanoGCG's ``get_nonascii_toks`` (tokens that decode to non-ASCII or
    unprintable text, and BOS/EOS/PAD/UNK; nanogcg/utils.py @ d4a20a8b4a12c3ee814a77a61423b7bdcd151f82), plus the
    embedding rows past the tokenizer's vocabulary (padding rows no text can produce)."""
    import torch

    bad: list[int] = []
    if not allow_non_ascii:
        texts = tok.batch_decode([[i] for i in range(tok.vocab_size)])
        bad = [i for i, s in enumerate(texts) if not (s.isascii() and s.isprintable())]
        bad += [t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) if t is not None]
    bad += list(range(len(tok), n_embed))
    return torch.tensor(sorted(set(bad)), dtype=torch.long, device=device)
