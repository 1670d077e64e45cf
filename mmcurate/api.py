"""The Python entry point: run a recipe as the CLI does (``mmcurate run``), the report included.

    import mmcurate
    manifest = mmcurate.run("recipe.yaml")                     # or a dict, or a parsed Recipe
    manifest = mmcurate.run(recipe, executor="ray", address="auto", resume=True)

The executors themselves (``pipeline.executor.LocalExecutor``, ``pipeline.ray_executor.RayExecutor``) write the
outputs only; the report (``thumbs.parquet``, and ``report.html`` when the recipe asks for it) is an observer
attached here, so the pipeline never imports the report.
"""

from __future__ import annotations

from pathlib import Path


def make_executor(
    recipe,
    *,
    executor: str = "local",
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress=True,
    keep_work: bool = False,
    report: bool = True,
    observers=(),
):
    """The executor for ``recipe`` (a path to YAML/JSON, a dict, or a parsed Recipe) with the report's observer
    (unless ``report=False``) and ``observers`` attached."""
    from mmcurate.pipeline.recipe import Recipe, load_recipe, parse_recipe
    from mmcurate.pipeline.stage import StageError

    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
    elif isinstance(recipe, dict):
        recipe = parse_recipe(recipe)
    elif not isinstance(recipe, Recipe):
        raise StageError(f"recipe must be a path, a mapping or a Recipe, got {type(recipe).__name__}")
    attached = list(observers)
    if report:
        from mmcurate.report import ReportObserver

        attached.insert(0, ReportObserver())  # thumbs.parquet, and report.html when the recipe asks for it
    options = {
        "resume": resume,
        "overwrite": overwrite,
        "progress": progress,
        "keep_work": keep_work,
        "observers": attached,
    }
    if executor == "ray":
        from mmcurate.pipeline.ray_executor import RayExecutor

        return RayExecutor(recipe, address=address, **options)
    if executor != "local":
        raise StageError(f"executor must be 'local' or 'ray', got {executor!r}")
    if address is not None:
        raise StageError("address is for executor='ray'")
    from mmcurate.pipeline.executor import LocalExecutor

    return LocalExecutor(recipe, **options)


def run(recipe, **options) -> dict:
    """Run ``recipe`` (see :func:`make_executor` for the options); returns the run's manifest."""
    return make_executor(recipe, **options).run()
