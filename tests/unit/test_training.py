import pytest
import torch

from streamrec.models.baselines import RiverMF, default_baselines
from streamrec.models.evaluation import COLD_ITEM, COLD_USER, KEEP_ALL, KNOWN_ITEMS, METRICS
from streamrec.models.learner import RECOMMENDER, Event, Observation, OnlineTrainer
from streamrec.models.popularity import ItemPopularity
from streamrec.models.recommender import Recommender, RecommenderConfig
from tests.unit.test_recommender import SMALL, planted_stream


def run(trainer, samples, batch_size=100):
    histories: dict[str, list[str]] = {}
    batch = []
    for s in samples:
        history = histories.setdefault(s.user_id, [])
        batch.append(Observation(Event(s.user_id, s.item_id, "click", int(s.ts_s * 1000)), tuple(history)))
        history.append(s.item_id)
        if len(batch) == batch_size:
            trainer.step(batch)
            batch = []


def test_every_model_is_scored_on_the_same_events_before_training():
    samples, _ = planted_stream(events=2000, seed=4)
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig(**SMALL, seed=2)),
        {"popularity": ItemPopularity(half_life_s=500.0), "river-mf": RiverMF(n_factors=4)},
    )
    run(trainer, samples)
    table = trainer.table()
    counts = {name: table[name]["overall"]["n"] for name in table}
    assert len(set(counts.values())) == 1  # same events for every model
    # every event is scored over the catalogue, items nobody had chosen yet included ...
    assert counts[RECOMMENDER] == 2000 and trainer.unknown_items > 0
    # ... and the second column keeps those on items the model had trained on, for every model alike
    known = {name: table[name][KNOWN_ITEMS]["n"] for name in table}
    assert set(known.values()) == {2000 - trainer.unknown_items}
    assert table[RECOMMENDER][COLD_USER]["n"] > 0 and table[RECOMMENDER][COLD_ITEM]["n"] > 0
    # the planted communities are learnable: the model beats popularity, which cannot see them
    assert table[RECOMMENDER]["overall"]["ndcg@10"] > table["popularity"]["overall"]["ndcg@10"]


def test_only_configured_event_types_are_evaluated_but_all_are_trained():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)))
    first = [Observation(Event("u", "a", "click", 1000)), Observation(Event("v", "a", "purchase", 2000))]
    trainer.step(first)
    report = trainer.step([Observation(Event("w", "a", "purchase", 3000)), Observation(Event("w", "a", "click", 4000))])
    assert report.evaluated == 1 and report.trained == 2
    assert trainer.model.samples_trained == 4


def last_metrics(trainer: OnlineTrainer, model: str, slice_name: str = "overall") -> dict[str, float]:
    """The metrics of the last event scored by ``model`` (the trainer keeps events)."""
    evaluator = trainer.evaluator if model == RECOMMENDER else trainer.baseline_sink.evaluators[model]
    _, values = evaluator.events(slice_name)
    return dict(zip(METRICS, values[-1].tolist(), strict=True))


def test_seen_items_are_excluded_from_the_ranking():
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig(**SMALL)), {"popularity": ItemPopularity()}, keep_events=KEEP_ALL
    )
    # "hit" is the most popular item; "x" is chosen once
    trainer.step([Observation(Event(f"u{n}", "hit", "click", 1000 + n)) for n in range(5)])
    trainer.step([Observation(Event("v", "x", "click", 2000))])
    assert last_metrics(trainer, "popularity")["mrr"] == 0.5  # behind "hit"
    with_seen = trainer.step([Observation(Event("w", "x", "click", 3000), seen=frozenset({"hit"}))])
    assert with_seen.evaluated == 1
    # with "hit" excluded, popularity ranks x first
    assert last_metrics(trainer, "popularity")["mrr"] == 1.0


def test_default_baselines_are_popularity_cooccurrence_knn_and_both_river_factorisations():
    baselines = default_baselines(seed=1)
    assert set(baselines) == {"most_popular", "cooccurrence", "item_knn", "biased_mf", "funk_mf"}
    assert {b.kind for b in baselines.values() if isinstance(b, RiverMF)} == {"biased", "funk"}


def test_expired_ids_are_reported_by_the_step():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL, ttl_s=10.0)))
    trainer.step([Observation(Event("old", "a", "click", 0))])
    report = trainer.step([Observation(Event("new", "b", "click", 60_000))])
    assert report.expired_users == ["old"] and report.expired_items == ["a"]
    assert "old" not in trainer.model.users and "new" in trainer.model.users


def test_expired_items_stay_in_the_catalogue_but_leave_the_known_items_column():
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig(**SMALL, ttl_s=10.0)), {"popularity": ItemPopularity(half_life_s=5.0)}
    )
    trainer.step([Observation(Event("u", "a", "click", 0)), Observation(Event("u", "b", "click", 1000))])
    trainer.step([Observation(Event("v", "c", "click", 60_000))])  # a and b expire
    trainer.step([Observation(Event("w", "c", "click", 61_000))])
    sink = trainer.baseline_sink
    assert sink.columns.items == ["a", "b", "c"] and trainer.model.items.ids() == ["c"]
    assert sink.columns.known.tolist() == [False, False, True] == trainer._columns.known.tolist()
    # one known candidate: the last click is ranked first by every model in the second column
    assert trainer.table()["popularity"][KNOWN_ITEMS]["hr@10"] == 1.0


def test_items_nobody_has_chosen_are_ranked_with_a_random_tie_break():
    """An announced item competes from the start; a model that cannot tell items apart gets a random rank."""
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig(**SMALL)), {"popularity": ItemPopularity()}, keep_events=KEEP_ALL
    )
    trainer.announce([f"i{n}" for n in range(40)])
    trainer.step([Observation(Event("u", "i7", "click", 1000))])
    # nothing learned yet: popularity ties all 40 items, so the expected rank is uniform over 1..40
    assert last_metrics(trainer, "popularity")["hr@10"] == pytest.approx(10 / 40)
    assert last_metrics(trainer, "popularity")["mrr"] == pytest.approx(sum(1 / r for r in range(1, 41)) / 40)
    assert trainer.unknown_items == 1 and trainer.table()["popularity"].get(KNOWN_ITEMS) is None
    report = trainer.step([Observation(Event("v", "i7", "click", 2000))])
    assert report.evaluated == 1 and last_metrics(trainer, "popularity")["mrr"] == 1.0  # i7 leads now
    assert trainer.catalogue_size == 40


def test_content_gives_an_item_a_row_but_is_not_a_sighting():
    model = Recommender(RecommenderConfig(**SMALL))
    model.set_content("new", torch.ones(SMALL["content_dim"]))
    assert "new" in model.items and model.item_count("new") == 0
    trainer = OnlineTrainer(model, keep_events=KEEP_ALL)
    trainer.step([Observation(Event("u", "new", "click", 1000))])
    # a cold item: no earlier click, whatever the content said
    assert trainer.table()[RECOMMENDER][COLD_ITEM]["n"] == 1


def test_cold_items_are_judged_on_clicks_before_the_event_even_within_a_batch():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)), keep_events=KEEP_ALL)
    trainer.step([Observation(Event(f"u{n}", "a", "click", 1000 + n)) for n in range(7)])
    table = trainer.table()[RECOMMENDER]
    assert table["overall"]["n"] == 7 and table[COLD_ITEM]["n"] == 5  # 0..4 earlier clicks


def test_reread_events_are_trained_on_but_not_scored():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)), {"popularity": ItemPopularity()})
    report = trainer.step(
        [Observation(Event("u", "a", "click", 1000), reread=True), Observation(Event("v", "a", "click", 2000))]
    )
    assert (report.evaluated, report.reread, report.trained) == (1, 1, 2) and trainer.reread == 1
    assert trainer.table()["popularity"]["overall"]["n"] == 1


def test_late_events_are_trained_on_but_not_scored_by_any_model():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)), {"popularity": ItemPopularity()})
    trainer.step([Observation(Event(f"u{n}", "hit", "click", 1000 + n)) for n in range(3)])
    report = trainer.step(
        [
            Observation(Event("v", "hit", "click", 500), late=True),
            Observation(Event("w", "hit", "click", 2000)),
        ]
    )
    assert (report.evaluated, report.late, report.trained) == (1, 1, 2)
    assert trainer.late == 1 and trainer.model.samples_trained == 5
    table = trainer.table()
    assert table[RECOMMENDER]["overall"]["n"] == table["popularity"]["overall"]["n"] == 3 + 1


def test_tuning_events_are_trained_on_by_every_model_but_never_scored():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)), {"popularity": ItemPopularity()}, tuning_events=5)
    first = trainer.step([Observation(Event(f"u{n}", "a", "click", 1000 + n)) for n in range(3)])
    second = trainer.step([Observation(Event(f"v{n}", "b" if n < 2 else "a", "click", 2000 + n)) for n in range(4)])
    assert (first.evaluated, second.evaluated) == (0, 2) and trainer.model.samples_trained == 7
    # the baselines learned from the held events too: "a" (4 earlier clicks) leads when v2 and v3 are scored
    assert trainer.table()["popularity"]["overall"] == pytest.approx(
        trainer.table()["popularity"]["overall"] | {"n": 2, "hr@10": 1.0, "mrr": 1.0}
    )
