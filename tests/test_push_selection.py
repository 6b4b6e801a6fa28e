"""Pushing any selection (``hf-select push --selection``, ``SelectionResult.push_to_hub``) through a stand-in Hub
client: one commit, private by default, the card's metadata read back with huggingface_hub's card data classes, the
pool with its verdicts as parquet, and one clear error for each bad input with nothing uploaded."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Dataset, load_from_disk
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_select import hub
from hf_select.cli import main
from hf_select.errors import HFSelectError
from hf_select.selection import select

TOKEN = "hf_" + "Z9y8X7w6V5u4T3s2R1q0PpOoNnMm"


def _not_found(repo_id):
    err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(err, f"404 {repo_id} not found")
    return err


class StandInApi:
    """The HfApi calls a push makes; files are read at commit time (the pushed folder is temporary)."""

    repos: dict = {}  # repo_id -> private
    commits: list = []
    created: list = []
    sources: dict = {}  # Hub id -> (card data, sha) of datasets and models the cards read

    def __init__(self, token=None):
        self.token = token

    def repo_info(self, repo_id, repo_type=None):
        if repo_id not in StandInApi.repos:
            raise _not_found(repo_id)
        return type("Info", (), {"private": StandInApi.repos[repo_id]})()

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        StandInApi.created.append((repo_id, repo_type, private))
        StandInApi.repos[repo_id] = private

    def _info(self, repo_id):
        if repo_id not in StandInApi.sources:
            raise _not_found(repo_id)
        card, sha = StandInApi.sources[repo_id]
        return type("Info", (), {"card_data": card, "sha": sha})()

    dataset_info = model_info = _info

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, **kw):
        files = {}
        for op in operations:
            with open(op.path_or_fileobj, "rb") as f:
                files[op.path_in_repo] = f.read()
        StandInApi.commits.append({"repo_id": repo_id, "repo_type": repo_type, "files": files,
                                   "message": commit_message})


@pytest.fixture
def hub_api(monkeypatch):
    import hf_select.models

    monkeypatch.setattr(hf_select.models, "hub_is_offline", lambda: False)
    monkeypatch.setattr("huggingface_hub.HfApi", StandInApi)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: TOKEN)
    StandInApi.repos, StandInApi.commits, StandInApi.created = {}, [], []
    StandInApi.sources = {"tatsu-lab/alpaca": ({"license": "cc-by-nc-4.0"}, "a" * 40),
                          "HuggingFaceTB/SmolLM2-135M-Instruct": ({"license": "apache-2.0"}, "b" * 40)}
    return StandInApi


def _card(commit):
    text = commit["files"]["README.md"].decode()
    return text, DatasetCard(text)


def _check_dataset_card_data(card):
    """The YAML round-trips through DatasetCardData and declares the configs the viewer reads."""
    data = card.data.to_dict()
    again = DatasetCardData(**data)
    assert again.to_dict() == data
    for config in data["configs"]:
        for files in config["data_files"]:
            assert set(files) == {"split", "path"}
    return data


@pytest.fixture
def score_select(tiny_lm_path, tmp_path):
    rows = [{"instruction": f"Add {i} and {i % 3}", "input": "", "output": f"{i + i % 3} is the sum"}
            for i in range(10)]
    rows.append({"instruction": "Say nothing", "input": "", "output": ""})
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(rows))
    scored, chosen = tmp_path / "scored", tmp_path / "chosen"
    assert main(["score", "ifd", "--dataset", str(src), "--model", str(tiny_lm_path), "--output", str(scored),
                 "--template", "plain"]) == 0
    assert main(["select", "--dataset", str(scored), "--output", str(chosen),
                 "--step", "{step: ifd_rule, count: 3}"]) == 0
    return src, scored, chosen


def test_push_a_score_select_folder_with_its_pool(score_select, hub_api, capsys):
    src, scored, chosen = score_select
    assert main(["push", "--selection", str(chosen), "--dataset-id", "me/sums", "--with-pool", str(scored)]) == 0
    assert "https://huggingface.co/datasets/me/sums" in capsys.readouterr().out
    assert hub_api.created == [("me/sums", "dataset", True)]  # private unless the user says public
    assert len(hub_api.commits) == 1  # one commit: all or nothing
    commit = hub_api.commits[0]
    assert {"README.md", "data/train.parquet", "pool/train.parquet", "row_ids.json", "selection.json",
            "select.yaml"} <= set(commit["files"])
    text, card = _card(commit)
    data = _check_dataset_card_data(card)
    assert [c["config_name"] for c in data["configs"]] == ["default", "pool"]
    # a local source: no licence to read, so `other` with a name and a note
    assert data["license"] == "other" and data["license_name"] == hub.UNKNOWN_LICENSE_NAME
    assert "could not be read" in text
    assert "3 of 11 rows" in text and "the IFD rule" in text and "| 1 | `ifd_rule` |" in text
    # the scorer's settings from the scored columns' provenance, no local path
    assert "### How the rows were scored" in text and "| `ifd` | `ifd`" in text and '"template": "plain"' in text
    assert str(src.parent) not in text
    assert "Rows corrupted on purpose" not in text and "A model fine-tuned" not in text
    assert "## The whole pool with its verdicts" in text and "`drop_reason`" in text
    # the pool: every row once, its scores and the three verdict columns, readable by the viewer (plain parquet)
    pool = pq.read_table(io.BytesIO(commit["files"]["pool/train.parquet"])).to_pylist()
    assert [r["_row_id"] for r in pool] == list(range(11))
    kept = json.loads(commit["files"]["row_ids.json"])
    assert [r["_row_id"] for r in pool if r["selected"]] == kept and len(kept) == 3
    assert all(r["drop_step"] is None and r["drop_reason"] is None for r in pool if r["selected"])
    dropped = [r for r in pool if not r["selected"]]
    assert all(r["drop_step"] == "ifd_rule" and r["drop_reason"] for r in dropped)
    assert "ifd" in pool[0] and "ifd_status" in pool[0]
    steps = yaml.safe_load(commit["files"]["select.yaml"])
    assert steps["steps"][0]["step"] == "ifd_rule" and steps["steps"][0]["count"] == 3


def test_push_a_python_selection_result(hub_api, tmp_path):
    from hf_select.report import make_report

    n = 40
    pool = Dataset.from_dict({
        "instruction": [f"question {i}" for i in range(n)], "output": [f"answer {i}" for i in range(n)],
        "quality": [float(i % 10) for i in range(n)],
        "corruption": ["swapped" if i % 8 == 0 else "none" for i in range(n)],
    })
    result = select(pool, [{"step": "threshold", "column": "quality", "min": 2.0},
                           {"step": "top", "column": "quality", "count": 10}])
    report = tmp_path / "report"
    make_report(pool, result, report)
    url = result.push_to_hub("me/q", source="tatsu-lab/alpaca", report_dir=report, with_pool=True)
    assert url == "https://huggingface.co/datasets/me/q"
    text, card = _card(hub_api.commits[0])
    data = _check_dataset_card_data(card)
    # the licence and revision from the source's card and commit
    assert data["license"] == "cc-by-nc-4.0" and "license_name" not in data
    assert data["source_datasets"] == ["tatsu-lab/alpaca"]
    assert "a" * 40 in text and f'revision="{"a" * 40}"' in text
    assert "## Rows corrupted on purpose" in text  # a labelled pool
    assert "## Example rows" in text and "Kept: top by `quality`" in text  # the report's example rows
    assert "| below_min | 8 |" in text and "| not_top | 22 |" in text
    pool_rows = pq.read_table(io.BytesIO(hub_api.commits[0]["files"]["pool/train.parquet"])).to_pylist()
    assert sum(r["selected"] for r in pool_rows) == 10 and len(pool_rows) == n
    assert {r["drop_reason"] for r in pool_rows if not r["selected"]} == {"below_min", "not_top"}


def test_model_card_metadata_the_hub_reads(hub_api):
    ctx = hub.build_card_context(
        selection={"provenance": [{"step": "random", "params": {"count": 2}, "rows_in": 5, "rows_out": 2}],
                   "row_ids": [3, 1]},
        source="tatsu-lab/alpaca", method="superfiltering", rows_in=5,
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        eval_result={"dataset": "/home/me/eval/alpaca_eval.json", "loss": 1.23456, "rows": 805})
    assert ctx["license"] == "cc-by-nc-4.0" and ctx["source_revision"] == "a" * 40
    assert ctx["base_model_license"] == "apache-2.0"
    card = hub.render_model_card(ctx, model_id="me/m", dataset_link="me/subset")
    again = ModelCard(str(card))
    data = again.data.to_dict()
    assert ModelCardData(**data).to_dict() == data
    assert data["license"] == "apache-2.0" and data["datasets"] == ["me/subset"]
    results = model_index_to_eval_results(yaml.safe_load(str(card).split("---")[1])["model-index"])[1]
    assert [(r.metric_type, r.metric_value, r.dataset_name) for r in results] == [
        ("heldout_loss", 1.23456, "alpaca_eval.json")]
    assert "/home/me" not in str(card) and "Rows corrupted on purpose" not in str(card)
    dataset_card = DatasetCard(str(hub.render_dataset_card(ctx, dataset_id="me/subset", model_link="me/m")))
    assert dataset_card.data.license == "cc-by-nc-4.0"
    # no evaluation: no model-index
    no_eval = hub.render_model_card({**ctx, "eval": {}}, model_id="me/m", dataset_link="me/subset")
    assert "model-index" not in str(no_eval)


def test_bad_input_is_one_error_and_nothing_uploaded(score_select, hub_api, monkeypatch, tmp_path):
    _, scored, chosen = score_select

    from hf_select.cli import build_parser

    def fails(args, match):
        parsed = build_parser().parse_args(["push", *args])
        with pytest.raises(HFSelectError, match=match) as err:
            parsed.func(parsed)
        assert TOKEN not in str(err.value) and "\n" not in str(err.value)
        assert not hub_api.commits and not hub_api.created

    # a repo id that exists and is public, pushing private
    hub_api.repos["me/open"] = False
    fails(["--selection", str(chosen), "--dataset-id", "me/open"], r"me/open exists and is public.*--public")
    # a pool whose fingerprint no longer matches
    changed = load_from_disk(str(scored)).map(lambda r: {"ifd": 0.5})
    other = tmp_path / "changed"
    changed.save_to_disk(str(other))
    fails(["--selection", str(chosen), "--dataset-id", "me/x", "--with-pool", str(other)],
          rf"--with-pool {other}: not the dataset .* was selected from")
    # an older-version folder, an incomplete one
    old = tmp_path / "old"
    shutil.copytree(chosen, old)
    meta = json.loads((old / "provenance.json").read_text())
    meta.pop("format")
    (old / "provenance.json").write_text(json.dumps(meta))
    fails(["--selection", str(old), "--dataset-id", "me/x"], rf"{old}: .*older hf-select.*hf-select select")
    partial = tmp_path / "partial"
    shutil.copytree(chosen, partial)
    shutil.rmtree(partial / "dropped")
    fails(["--selection", str(partial), "--dataset-id", "me/x"], rf"{partial}: incomplete selection folder")
    fails(["--selection", str(tmp_path / "nowhere"), "--dataset-id", "me/x"], "no such selection folder")
    fails(["--selection", str(chosen), "--dataset-id", "not an id"], "not a Hub dataset id")
    # no token
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    fails(["--selection", str(chosen), "--dataset-id", "me/x"], rf"no Hugging Face token.*{chosen}")
    # through the command line: one `hf-select: error:` line, exit code 2
    assert main(["push", "--selection", str(chosen), "--dataset-id", "me/x"]) == 2
