"""Expanding one tree node: generate samples, parse each into a step, run its code, add children.

Shared by every strategy so that step handling (parse errors, observations, code-error counting,
terminal sentinels) is identical across greedy, beam search and MCTS.
"""

from __future__ import annotations

import asyncio
import time

from runtime.engine import Completion, SamplingParams
from runtime.react import (
    NO_ACTION_OBSERVATION,
    SENTINEL_NO_VALID_CHILD,
    ReactFormat,
    ParsedStep,
)
from runtime.tree import Node, Tree, mean_logprob_prior
from runtime.errors import PromptTooLongError
from strategies.base import TOO_LONG_VALUE, SolveContext, SolveStats

TIMEOUT_PREFIX = "TimeoutError"


def sampling_params(ctx: SolveContext, fmt: ReactFormat, n: int) -> SamplingParams:
    cfg = ctx.strategy
    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                          n=n, stop=fmt.stop, seed=cfg.seed)


def code_history(tree: Tree, node: Node) -> list[str]:
    """Code of the path's earlier steps, replayed before a new snippet. Like the original, steps
    whose run timed out are skipped: replaying them would time out every descendant too."""
    return [n.code for n in tree.path(node)
            if n.code is not None and not (n.observation or "").startswith(TIMEOUT_PREFIX)]


def build_prompt(tree: Tree, node: Node, fmt: ReactFormat, question: str) -> str:
    return fmt.build_prompt(question, [n.text for n in tree.path(node)])


async def _observe(step: ParsedStep, history: list[str], ctx: SolveContext,
                   stats: SolveStats) -> str | None:
    """The observation of a code step, or None for a step that runs nothing."""
    if step.error is not None or step.final_answer is not None:
        return None
    if step.action == "None":
        return NO_ACTION_OBSERVATION
    assert step.code is not None
    stats.code_runs += 1
    started = time.monotonic()
    result = await ctx.sandbox.run(step.code, history=history, timeout_s=ctx.sandbox_config.timeout_s)
    stats.sandbox_wait_s += time.monotonic() - started
    stats.code_timeouts += result.timed_out
    return result.observation


def _attach(tree: Tree, parent: Node, completion: Completion, step: ParsedStep,
            observation: str | None, fmt: ReactFormat) -> Node:
    prior = mean_logprob_prior(completion.cumulative_logprob, len(completion.token_ids))
    if step.error is not None:
        return tree.add_child(parent, text=completion.text, prior=prior, terminal=True,
                              final_answer=SENTINEL_NO_VALID_CHILD)
    if step.final_answer is not None:
        return tree.add_child(parent, text=step.text, prior=prior, terminal=True,
                              final_answer=step.final_answer)
    assert observation is not None
    # The original counts any observation containing "Error" as a code error (ALPHAMATH.md §1.3).
    code_error = "Error" in observation
    return tree.add_child(
        parent, text=fmt.with_observation(step, observation), code=step.code,
        observation=observation, prior=prior, code_error=code_error,
        consecutive_errors=parent.consecutive_errors + 1 if code_error else 0)


async def expand(tree: Tree, node: Node, question: str, fmt: ReactFormat, ctx: SolveContext,
                 stats: SolveStats, n: int) -> list[Node]:
    """Sample `n` next steps of `node` (one engine request) and add them as children.

    The children's code runs concurrently; children are attached in sample order so that a tree
    is the same whatever order the sandbox finishes in.
    """
    started = time.monotonic()
    try:
        completions = await ctx.engine.generate(build_prompt(tree, node, fmt, question),
                                                sampling_params(ctx, fmt, n))
        stats.generate_wait_s += time.monotonic() - started
    except PromptTooLongError:
        # The path outgrew the context: a dead end worth −1, as the original treats it.
        node.terminal = True
        if node.value is None:  # keep a value a search already gave it (SBS scores beams)
            node.value = TOO_LONG_VALUE
        return []
    stats.engine_calls += 1
    stats.generated_tokens += sum(len(c.token_ids) for c in completions)
    history = code_history(tree, node)
    steps = [fmt.parse(c.text) for c in completions]
    observations = await asyncio.gather(*(_observe(s, history, ctx, stats) for s in steps))
    return [_attach(tree, node, c, s, obs, fmt)
            for c, s, obs in zip(completions, steps, observations)]
