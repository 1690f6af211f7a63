"""The experiments' use cases: results and conclusion, shared by the command line and the API.

Results read the experiment and its arms' sums over their units from the store (which computes
them where the units are) and hand them to the pure statistics (`core/stats.py`); concluding
stops the experiment and, when the results recommend the treatment, promotes it through the
normal gate, as one audited change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from gateway.core import registry as plans
from gateway.core.model import Experiment
from gateway.core.stats import ExperimentResults, analyze_totals
from gateway.errors import ExperimentNotFound, StateChanged
from gateway.prompts import did_you_mean
from gateway.settings import ExperimentSettings
from gateway.stores.base import Store


def unknown_experiment(experiment_id: str, known: Iterable[str]) -> ExperimentNotFound:
    """`Experiment 'x' does not exist`, with the closest of the `known` ids."""
    return ExperimentNotFound(
        f"Experiment {experiment_id!r} does not exist.{did_you_mean(experiment_id, known)} "
        "List them with: "
        "gateway experiments list",
        param="id",
    )


async def stored_experiment(store: Store, experiment_id: str) -> Experiment:
    """The experiment; ExperimentNotFound with the closest stored ids when there is none."""
    found = await store.find_experiment(experiment_id)
    if found is not None:
        return found
    snapshot = await store.snapshot()
    raise unknown_experiment(
        experiment_id, (e.id for state in snapshot.prompts.values() for e in state.experiments)
    )


@dataclass(frozen=True, slots=True)
class Conclusion:
    """What concluding did: the results it acted on, and whether the treatment became active."""

    experiment: Experiment
    results: ExperimentResults
    promoted: bool


async def experiment_results(
    store: Store, experiment_id: str, settings: ExperimentSettings
) -> ExperimentResults:
    """The §11 results of one experiment. Raises ExperimentNotFound, StoreUnavailable."""
    experiment = await store.find_experiment(experiment_id)
    if experiment is None:
        raise ExperimentNotFound(
            f"Experiment {experiment_id!r} does not exist; list them with: "
            "gateway experiments list",
            param="id",
        )
    control, treatment = await store.arm_totals(experiment_id, experiment.metric)
    # scipy's distributions take a few milliseconds: off the event loop that serves calls.
    return await asyncio.to_thread(
        analyze_totals,
        experiment,
        control,
        treatment,
        alpha=settings.alpha,
        min_units=settings.min_users_per_variant,
    )


async def conclude_experiment(
    store: Store,
    experiment_id: str,
    *,
    settings: ExperimentSettings,
    threshold: float,
    force: bool,
    actor: str,
    clock: Callable[[], datetime],
    expect_promote: bool | None = None,
) -> Conclusion:
    """Stop the experiment; promote its treatment when the results say `promote_treatment`.

    The promotion passes the gate (PromotionRefused under the threshold unless `force`); when it
    is refused, nothing changes, the experiment keeps its status. `expect_promote`: whether the
    caller showed a conclusion that promotes (None: not checked); when the results computed now
    decide otherwise, StateChanged (409) and nothing changes.
    """
    results = await experiment_results(store, experiment_id, settings)
    promote = results.recommendation == "promote_treatment"
    if expect_promote is not None and promote != expect_promote:
        raise StateChanged(
            f"The results of {experiment_id} changed since they were shown: they now recommend "
            f"{results.recommendation.replace('_', ' ')} ({results.reason}). Nothing was "
            "changed; read them again before concluding.",
            param="expect_promote",
        )
    found = await store.find_experiment(experiment_id)
    assert found is not None  # experiments are never deleted
    change = await store.apply(
        found.prompt_name,
        lambda state, _: plans.plan_conclude_experiment(
            state,
            experiment_id,
            promote=promote,
            reason=results.reason,
            threshold=threshold,
            force=force,
            actor=actor,
            now=clock(),
        ),
    )
    concluded = await store.find_experiment(experiment_id)
    assert concluded is not None
    return Conclusion(concluded, results, change.activation_changed)
