import pytest

from loopctr.config import apply_overrides
from loopctr.data import catalog
from loopctr.data.schema import schema_from_dict
from loopctr.errors import UserError
from loopctr.train.config import build_run_config

BASE = {"name": "s", "label": "y", "fields": [{"name": "item", "type": "categorical"}]}


def test_builtin_schema_pairs_targets_with_sequences():
    schema = catalog.resolve("amazon-electronics-x1")
    assert schema.sequence_targets() == [("item_id", "item_history"), ("cate_id", "cate_history")]
    assert schema.vocabularies == ["item_id", "cate_id"]
    assert schema.group == "user_id" and "user_id" not in schema.field_names


@pytest.mark.parametrize("change,message", [
    ({"lable": "y"}, "did you mean 'label'"),
    ({"fields": [{"name": "item", "type": "categorial"}]}, "has type 'categorial'"),
    ({"fields": [{"name": "item", "type": "categorical", "max_length": 3}]}, "did you mean 'max_len'"),
    ({"fields": [{"name": "h", "type": "sequence", "share_vocab": "nope", "max_len": 5}]}, "shares the vocabulary of 'nope'"),
    ({"fields": [{"name": "h", "type": "sequence"}]}, "max_len >= 1"),
    ({"fields": [{"name": "y", "type": "categorical"}]}, "also declared as a feature"),
])
def test_schema_validation(change, message):
    with pytest.raises(UserError, match=message):
        schema_from_dict({**BASE, **change})


def test_unknown_dataset_suggests_closest():
    with pytest.raises(UserError, match="did you mean 'amazon-electronics-x1'"):
        catalog.resolve("amazon-electronic-x1")


def test_overrides_bare_dotted_and_typed():
    run = build_run_config("din", overrides=["epochs=3", "train.lr=1e-3", "attention_hidden_units=[64,32]",
                                             "model.use_softmax=false", "max_len=50"])
    assert run.train.epochs == 3 and run.train.lr == pytest.approx(1e-3)
    assert run.model.attention_hidden_units == [64, 32] and run.model.use_softmax is False
    assert run.data.max_len == 50


@pytest.mark.parametrize("override,message", [
    ("epoch=3", "unknown key 'epoch'; did you mean 'epochs'"),
    ("train.lrr=0.1", "did you mean"),
    ("epochs=three", "expected an integer"),
    ("use_softmax=2", "expected true or false"),
    ("optimizer=sgd", "not one of"),
    ("lr=-1", "must be > 0"),
    ("monitor=auc+logloss", "not mixed"),
    ("dnn_activation=swish", "not one of"),
    ("no_equals_sign", "expected key=value"),
])
def test_override_errors_are_explained(override, message):
    with pytest.raises(UserError, match=message):
        build_run_config("din", overrides=[override])


def test_config_file_and_model_name(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name: dnn\nmodel: {hidden_units: [8]}\ntrain: {epochs: 2}\n")
    run = build_run_config(None, cfg, ["seed=7"])
    assert run.model_name == "dnn" and run.model.hidden_units == [8] and run.train.seed == 7
    cfg.write_text("train: {epochz: 2}\n")
    with pytest.raises(UserError, match="did you mean 'train.epochs'"):
        build_run_config("dnn", cfg)
    with pytest.raises(UserError, match="unknown model 'dn'; did you mean 'dnn'"):
        build_run_config("dn")


def test_config_file_model_name_must_agree_with_model(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name: dnn\ntrain: {epochs: 2}\n")
    with pytest.raises(UserError, match=r"c.yaml: model_name 'dnn' conflicts with --model din"):
        build_run_config("din", cfg)
    assert build_run_config("dnn", cfg).model_name == "dnn"  # the same name: fine
    cfg.write_text("train: {epochs: 2}\n")
    assert build_run_config("din", cfg).model_name == "din"  # no name in the file: --model decides


def test_apply_overrides_copies():
    from loopctr.data.synthetic import SyntheticConfig

    base = SyntheticConfig()
    changed = apply_overrides(base, ["users=10"])
    assert changed.users == 10 and base.users == 3000


def test_dataset_defaults_sit_between_model_defaults_and_overrides():
    defaults = {"model.embedding_dim": 32, "train.batch_size": 8192}
    run = build_run_config("din", overrides=["batch_size=256"], dataset_defaults=defaults)
    assert run.model.embedding_dim == 32 and run.train.batch_size == 256


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    run = build_run_config(None, path)
    assert run.model_name in path.name
