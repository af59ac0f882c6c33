"""Attribution controls: random search over the declared space, tools without the model."""

from sia_bench.loop import Loop, RunConfig
from sia_bench.records import Budget
from tests.doubles import ScriptedModel, adder


def run(tmp_path, improver, generations, seed=3, **options):
    config = RunConfig(task="toy_arithmetic", improver=improver, improver_options=options, seed=seed,
                       budget=Budget(generations=generations))
    return Loop(config, tmp_path / f"{improver}-{seed}", model=ScriptedModel(fn=adder())).run()


def test_random_search_edits_only_the_declared_space_and_depends_on_the_seed(tmp_path):
    from tasks.toy_arithmetic.task import ToyArithmeticTask

    space = ToyArithmeticTask.search_space
    paths = []
    for seed in (0, 1, 2, 3):
        record = run(tmp_path, "random-search", 3, seed=seed)
        edits = [(a["param"], a["value"]) for g in record.generations[1:] for a in g.actions if "error" not in a]
        assert edits and all(p in space and v in space[p] for p, v in edits)
        assert all(g.proposer == "random" for g in record.generations[1:])
        assert all(a["rationale"] == "random search" for g in record.generations[1:] for a in g.actions)
        paths.append(tuple(edits))
    assert len(set(paths)) > 1  # the seed drives the search


def test_random_search_makes_no_train_rollouts(tmp_path):
    record = run(tmp_path, "random-search", 2, edits=2)
    assert record.ledger.rollouts.get("train", 0) == 0 and record.ledger.train_rollouts == 0
