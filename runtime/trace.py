"""`cli.py solve`: one question from the command line, its step-by-step trace printed."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from runtime.config import EvalConfig
from runtime.engines import open_engine
from runtime.problem import Problem
from sandbox import open_sandbox
from strategies import make_strategy
from strategies.base import SolveContext


async def solve_one(config: EvalConfig, question: str, answer: str | None, console: Console) -> int:
    from evals.grader import Grader
    from runtime.evaluate import sandbox_limits

    strategy = make_strategy(config.strategy)
    problem = Problem(id="cli", question=question, answer=(answer,) if answer else ())
    async with (open_engine(config.engine, seed=config.strategy.seed) as engine,
                open_sandbox(config.sandbox.backend, sandbox_limits(config)) as sandbox,
                Grader() as grader):
        async def grade(reference: tuple[str, ...], prediction: str) -> bool:
            return await grader.ais_equiv(reference, prediction, timeout_s=config.run.grade_timeout_s)

        ctx = SolveContext(engine=engine, sandbox=sandbox, strategy=config.strategy,
                           sandbox_config=config.sandbox, grade=grade)
        result = await strategy.solve(problem, ctx)
        ok = await grade((answer,), result.prediction or "") if answer else None

    tree = result.tree
    end = tree.nodes[result.solutions[0].node_id] if result.solutions else max(
        tree.nodes, key=lambda n: (n.depth, -n.id))
    # Text(), not str: model output and questions may contain [brackets] rich would read as markup.
    console.print(Panel(Text(question), title="question"))
    for node in tree.path(end):
        title = f"step {node.depth}" + (" · code error" if node.code_error else "")
        console.print(Panel(Text(node.text.strip()), title=title, title_align="left"))
    console.print(f"[bold]prediction:[/] {escape(repr(result.prediction))}   steps {result.stats.steps}   "
                  f"{result.stats.wall_s:.2f} s   {result.stats.code_runs} code runs")
    if answer:
        console.print(f"[bold]reference:[/] {escape(repr(answer))} → {'[green]correct' if ok else '[red]wrong'}")
    return 0
