"""``hf-select push OUTPUT_DIR --hub_dataset_id ID --hub_model_id ID``: push a recipe's subset and model with their
cards (the ``hub/`` folder a recipe leaves). Repositories are private unless ``--allow_public``. The token comes from
``hf auth login`` or ``HF_TOKEN``; it never appears in the output.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("push", help="Push a recipe's selected subset and model, with their cards, to the Hub.")
    p.add_argument("folder", help="A recipe's output_dir (or its hub/ folder).")
    p.add_argument("--hub_dataset_id", "--dataset-id", dest="dataset_id", default=None,
                   help="Dataset repository for the subset, e.g. me/alpaca-mods-4k (default: none, the subset is not "
                        "pushed; give this and/or --hub_model_id).")
    p.add_argument("--hub_model_id", "--model-id", dest="model_id", default=None,
                   help="Model repository for the fine-tuned model, e.g. me/smollm2-mods (default: none, the model is "
                        "not pushed).")
    p.add_argument("--allow_public", "--public", dest="allow_public", action="store_true",
                   help="Create public repositories (default: off, private: the data may be private).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import push_outputs

    urls = push_outputs(args.folder, dataset_id=args.dataset_id, model_id=args.model_id,
                        allow_public=args.allow_public)
    for kind, url in urls.items():
        print(f"pushed the {kind}: {url}")
    return 0
