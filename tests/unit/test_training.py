from streamrec.models.baselines import RiverMF, default_baselines
from streamrec.models.evaluation import COLD_USER
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
    # events on items nobody had seen yet cannot be ranked; all the others were
    assert counts[RECOMMENDER] + trainer.unrankable == 2000 and trainer.unrankable > 0
    assert table[RECOMMENDER][COLD_USER]["n"] > 0
    # the planted communities are learnable: the model beats popularity, which cannot see them
    assert table[RECOMMENDER]["overall"]["ndcg@10"] > table["popularity"]["overall"]["ndcg@10"]


def test_only_configured_event_types_are_evaluated_but_all_are_trained():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)))
    first = [Observation(Event("u", "a", "click", 1000)), Observation(Event("v", "a", "purchase", 2000))]
    trainer.step(first)
    report = trainer.step([Observation(Event("w", "a", "purchase", 3000)), Observation(Event("w", "a", "click", 4000))])
    assert report.evaluated == 1 and report.trained == 2
    assert trainer.model.samples_trained == 4


def test_seen_items_are_excluded_from_the_ranking():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL)), {"popularity": ItemPopularity()})
    # "hit" is the most popular item; "x" is chosen once
    trainer.step([Observation(Event(f"u{n}", "hit", "click", 1000 + n)) for n in range(5)])
    trainer.step([Observation(Event("v", "x", "click", 2000))])
    with_seen = trainer.step([Observation(Event("w", "x", "click", 3000), seen=frozenset({"hit"}))])
    assert with_seen.evaluated == 1
    # with "hit" excluded, popularity ranks x first
    assert trainer.table()["popularity"]["overall"]["mrr"] == 1.0


def test_default_baselines_are_popularity_and_both_river_factorisations():
    baselines = default_baselines(seed=1)
    assert set(baselines) == {"most_popular", "biased_mf", "funk_mf"}
    assert {b.kind for b in baselines.values() if isinstance(b, RiverMF)} == {"biased", "funk"}


def test_expired_ids_are_reported_by_the_step():
    trainer = OnlineTrainer(Recommender(RecommenderConfig(**SMALL, ttl_s=10.0)))
    trainer.step([Observation(Event("old", "a", "click", 0))])
    report = trainer.step([Observation(Event("new", "b", "click", 60_000))])
    assert report.expired_users == ["old"] and report.expired_items == ["a"]
    assert "old" not in trainer.model.users and "new" in trainer.model.users


def test_baselines_see_the_same_candidates_as_the_recommender_when_items_expire():
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig(**SMALL, ttl_s=10.0)), {"popularity": ItemPopularity(half_life_s=5.0)}
    )
    trainer.step([Observation(Event("u", "a", "click", 0)), Observation(Event("u", "b", "click", 1000))])
    trainer.step([Observation(Event("v", "c", "click", 60_000))])  # a and b expire
    trainer.step([Observation(Event("w", "c", "click", 61_000))])
    assert sorted(trainer.baseline_sink.candidates) == sorted(trainer.model.items.ids()) == ["c"]
    # one candidate: the event is ranked first by every model
    assert trainer.table()["popularity"]["overall"]["hr@10"] == 1.0


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
    assert table[RECOMMENDER]["overall"]["n"] == table["popularity"]["overall"]["n"] == 1
