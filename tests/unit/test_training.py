from models.baselines import DecayedPopularity, RiverMF
from models.evaluation import COLD_USER
from models.recommender import Recommender, RecommenderConfig
from models.training import RECOMMENDER, Event, OnlineTrainer
from tests.unit.test_recommender import SMALL, planted_stream


def run(trainer, samples, batch_size=100):
    histories: dict[str, list[str]] = {}
    batch = []
    for s in samples:
        history = histories.setdefault(s.user_id, [])
        batch.append((Event(s.user_id, s.item_id, "click", int(s.ts_s * 1000)), tuple(history)))
        history.append(s.item_id)
        if len(batch) == batch_size:
            trainer.step(batch)
            batch = []


def test_every_model_is_scored_on_the_same_events_before_training():
    samples, _ = planted_stream(events=2000, seed=4)
    trainer = OnlineTrainer(
        Recommender(RecommenderConfig(**SMALL, seed=2)),
        {"popularity": DecayedPopularity(half_life_s=500.0), "river-mf": RiverMF(n_factors=4)},
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
    first = [(Event("u", "a", "click", 1000), ()), (Event("v", "a", "purchase", 2000), ())]
    trainer.step(first)
    report = trainer.step([(Event("w", "a", "purchase", 3000), ()), (Event("w", "a", "click", 4000), ())])
    assert report.evaluated == 1 and report.trained == 2
    assert trainer.model.samples_trained == 4
