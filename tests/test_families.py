"""Families: one schema each, one way from config to constructor, and a new family = module + line + YAML."""

from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from hydra.errors import ConfigCompositionException

from curator import pipeline
from curator.classifiers import registry
from curator.config import ClassifierConfig, register_configs
from curator.errors import ConfigError
from tests.conftest import compose_config, write_jsonl
from tests.test_pipeline import read_outputs

# A whole family, as a user would write it in a module of their own.
KEYWORD_FAMILY = """
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer

from curator.classifiers import DistributedDataClassifier
from curator.config import ClassifierConfig


@dataclass
class KeywordConfig(ClassifierConfig):
    keyword: str = "order"  # the token whose presence makes the label "yes"


class HasToken(torch.nn.Module):
    def __init__(self, token_id: int) -> None:
        super().__init__()
        self.token_id = token_id

    def forward(self, input_ids, attention_mask):
        hit = ((input_ids == self.token_id) & attention_mask.bool()).any(dim=1).float()
        return torch.stack([hit, 1 - hit], dim=1)


class KeywordClassifier(DistributedDataClassifier):
    schema = KeywordConfig

    def __init__(self, name, model, keyword="order", revision=None, **kwargs):
        super().__init__(name, **kwargs)
        self.model, self.keyword = model, keyword

    @property
    def labels(self):
        return ["yes", "no"]

    def load_tokenizer(self):
        return AutoTokenizer.from_pretrained(self.model)

    def load_model(self, device):
        return HasToken(self.load_tokenizer().convert_tokens_to_ids(self.keyword)).to(device)

    def postprocess(self, outputs):
        return self.label_columns(outputs, self.labels)
"""


@pytest.fixture()
def keyword_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_path: Path) -> Iterator[Path]:
    """The module on sys.path and its YAML in a config dir; the registry is restored afterwards."""
    (tmp_path / "keyword_family.py").write_text(KEYWORD_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "my_conf" / "classifier"
    conf.mkdir(parents=True)
    (conf / "orders.yaml").write_text(
        f"# @package classifier.orders\nfamily: keyword\nmodel: {minilm_path}\n"
        "pred_column: order_pred\nkeyword: order\nbatch_size: 8\n"
    )
    shipped = dict(registry.FAMILIES)
    yield tmp_path / "my_conf"
    registry.FAMILIES.clear()
    registry.FAMILIES.update(shipped)
    registry.family_class.cache_clear()
    registry.composed_schema.cache_clear()
    registry.composed_config.cache_clear()
    register_configs()  # the shipped families only, for the tests that follow


def test_a_new_family_is_its_module_one_registry_line_and_its_yaml(
    keyword_family: Path, tmp_path: Path
) -> None:
    registry.register_family("keyword", "keyword_family:KeywordClassifier")  # the one line
    register_configs()
    write_jsonl(tmp_path / "in" / "t.jsonl", [{"text": "Please refund my order."}, {"text": "Nice weather."}])
    common = [
        f"hydra.searchpath=[file://{keyword_family}]",
        "classifier=orders",
        "cluster=sync",
        "quiet=true",
    ]
    cfg = compose_config([*common, f"dataset.path={tmp_path / 'in'}", f"output.path={tmp_path / 'out'}"])
    assert type(cfg.classifier["orders"]).__name__ == "KeywordConfig"
    pipeline.run(cfg)
    assert read_outputs(tmp_path / "out")["t.jsonl"]["order_pred"].tolist() == ["yes", "no"]
    # its own key is overridable like any other, and a misspelt one fails at composition
    cfg = compose_config([*common, "classifier.orders.keyword=weather"])
    assert cfg.classifier["orders"].keyword == "weather"
    with pytest.raises(ConfigCompositionException, match="keywrd"):
        compose_config([*common, "classifier.orders.keywrd=weather"])


def test_an_installed_package_declares_its_family_by_entry_point(
    keyword_family: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `python run.py` sees once a package with the module and this one line is installed."""
    info = tmp_path / "keyword_family-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: keyword-family\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[curator.families]\nkeyword = keyword_family:KeywordClassifier\n")
    registry.add_entry_points()
    assert registry.family_class("keyword").__name__ == "KeywordClassifier"
    register_configs()
    cfg = compose_config([f"hydra.searchpath=[file://{keyword_family}]", "classifier=orders"])
    assert cfg.classifier["orders"].keyword == "order"


def test_a_composed_config_pickles_for_launchers(tmp_path: Path) -> None:
    """submitit pickles the composed DictConfig; its schema classes load by name in a fresh process."""
    from hydra import compose, initialize_config_module

    register_configs()
    with initialize_config_module(config_module="curator.conf", version_base="1.3"):
        (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(compose(config_name="config")))
    code = f"import pickle; print(pickle.load(open({str(tmp_path / 'cfg.pkl')!r}, 'rb')).classifier)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "zero_shot_domain" in shown


def test_a_misspelt_key_of_a_published_classifier_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["classifier=domain", "classifier.domain.pred_colum=x"])
    assert "pred_colum" in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize(
    "override",
    ["+filter.kep=[Games]", "+classifier.domain.temprature=5", "+cluster.n_wrkers=2", "+dataset.paht=x"],
)
def test_a_misspelt_key_added_with_plus_is_refused_not_ignored(override: str) -> None:
    """Hydra suggests `+key=value` for a key it does not know; the run then dropped it without a word."""
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError, match=rf"Unknown setting\(s\): {re.escape(key)}\."):
        compose_config(["classifier=domain", override])
    cfg = compose_config(["classifier=domain", "+dataset.storage_options.anon=true"])
    assert cfg.dataset.storage_options == {"anon": True}  # maps take any key


def test_a_key_of_another_family_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"does not take keep_raw_pred; its keys: .*base_model"):
        compose_config(["classifier=domain", "classifier.domain.keep_raw_pred=true"])


# a shipped YAML of each family (sequence_classification has none: domain's keys are a subset of its)
SHIPPED = {
    "zero_shot": "zero_shot_domain",
    "embedding": "embedding",
    "head": "embedding",  # a head's YAML is written by task=train; its keys are the common ones
    "sequence_classification": "domain",
    "regression": "fineweb_edu",
    "deberta_mixin": "domain",
    "prompt_task_complexity": "prompt_task_complexity",
    "llm_guard": "aegis",
    "instruction_data_guard": "instruction_data_guard",
}
VALUES = {bool: True, int: 7, float: 0.5, str: "x"}


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_every_key_of_every_family_is_overridable(family: str) -> None:
    """`classifier.<name>.<key>=value` reaches the family's schema for each of its scalar keys."""
    name, schema = SHIPPED[family], registry.family_class(family).schema
    expected = {
        f.name: VALUES[kind]
        for f in dataclasses.fields(schema)
        if f.name != "family" and (kind := _scalar(schema, f.name)) is not None
    }
    overrides = [f"classifier.{name}.{key}={str(v).lower()}" for key, v in expected.items()]
    cfg = compose_config([f"classifier={name}", f"classifier.{name}.family={family}", *overrides])
    assert type(cfg.classifier[name]) is schema and issubclass(schema, ClassifierConfig)
    assert {key: getattr(cfg.classifier[name], key) for key in expected} == expected


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_a_shipped_familys_schema_is_its_class_schema(family: str) -> None:
    """The registry reads a shipped family's keys from curator.classifiers.schemas, not its class."""
    assert registry.family_schema(family) is registry.family_class(family).schema


ROOT = Path(__file__).resolve().parent.parent
# run.py in this process, then whether composing imported the families' heavy dependencies
IMPORTS_AFTER_RUN = f"""
import runpy, sys
sys.argv = ["run.py", *sys.argv[1:]]
try:
    runpy.run_path({str(ROOT / "run.py")!r}, run_name="__main__")
except SystemExit:
    pass
print("imported:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["classifier=domian"],
        ["classifier=domain", "classifier.domain.batch_sise=3"],
        ["classifier=domain", "classifier.domain.keep_raw_pred=true", "--cfg", "job"],
        ["classifier=domain", "--cfg", "job"],
    ],
)
def test_help_and_config_mistakes_answer_without_importing_torch(args: list[str]) -> None:
    """Composing a config needs the schemas only: --help, --cfg and a mistyped key answer in well under
    a second instead of after torch and transformers load (~2 s)."""
    done = subprocess.run([sys.executable, "-c", IMPORTS_AFTER_RUN, *args], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "imported: []", done.stdout + done.stderr


def _scalar(schema: type, key: str) -> type | None:
    """The key's scalar type (optional or not); None for lists and nested configs."""
    kind = get_type_hints(schema)[key]
    options = [k for k in (get_args(kind) or (kind,)) if k is not type(None)]
    return options[0] if len(options) == 1 and options[0] in (bool, int, float, str) else None
