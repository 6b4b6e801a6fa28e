"""``hf-select push``: publish a selection with its card on the Hub.

- ``hf-select push OUTPUT_DIR --hub_dataset_id ID --hub_model_id ID``: a recipe's subset and model (the ``hub/``
  folder a recipe leaves);
- ``hf-select push --selection DIR --dataset-id ID``: any selection, the folder ``hf-select select`` wrote (or
  ``SelectionResult.save()``), with the same dataset card; ``--with-pool`` adds config ``pool``, every pool row with
  ``selected``, ``drop_step`` and ``drop_reason`` for the Hub's dataset viewer.

Repositories are private unless ``--public``; a push is one commit per repository. The token comes from
``hf auth login`` or ``HF_TOKEN``; it never appears in the output.

Example:
    $ hf-select push --selection chosen/ --dataset-id me/alpaca-top10 --with-pool --report report/
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import HFSelectError


def register(sub: Any) -> None:
    p = sub.add_parser("push", help="Push a selection (a recipe's output_dir, or --selection DIR) with its cards to "
                                    "the Hub.",
                       description="Push a recipe's subset and model (OUTPUT_DIR), or any selection (--selection "
                                   "DIR, the folder `hf-select select` wrote), with their cards. Repositories are "
                                   "private unless --public.")
    p.add_argument("folder", nargs="?", default=None, help="A recipe's output_dir (or its hub/ folder).")
    p.add_argument("--selection", default=None, metavar="DIR",
                   help="Push this selection folder (the --output of `hf-select select`) instead of a recipe's "
                        "output_dir (default: none).")
    p.add_argument("--hub_dataset_id", "--dataset-id", dest="dataset_id", default=None,
                   help="Dataset repository for the subset, e.g. me/alpaca-mods-4k (default: none, the subset is not "
                        "pushed; give this and/or --hub_model_id).")
    p.add_argument("--hub_model_id", "--model-id", dest="model_id", default=None,
                   help="Model repository for the fine-tuned model, e.g. me/smollm2-mods (default: none, the model is "
                        "not pushed; recipes only).")
    p.add_argument("--allow_public", "--public", dest="allow_public", action="store_true",
                   help="Create public repositories (default: off, private: the data may be private).")
    p.add_argument("--with-pool", nargs="?", const="", default=None, metavar="POOL",
                   help="With --selection: add config 'pool', every pool row with its scores and selected, "
                        "drop_step, drop_reason. POOL (optional) is the scored dataset the selection was made from; "
                        "without it the selection's own rows (kept + dropped) are used (default: off).")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="With --selection: a report of it (`hf-select report`) whose plots and example rows go into "
                        "the card (default: none).")
    p.add_argument("--source", default=None, metavar="ID",
                   help="With --selection: the source dataset (Hub id or file) when `hf-select score` did not record "
                        "it (default: the recorded one).")
    p.add_argument("--source-revision", default=None, metavar="SHA",
                   help="With --selection: the source's commit the row ids index (default: read from the Hub).")
    p.add_argument("--license", default=None,
                   help="With --selection: the source's licence (default: read from its card; else license: other).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.selection is not None:
        from ..hub import is_hub_id, push_selection
        from ..selection.select import load_selection_folder

        if args.folder is not None:
            raise HFSelectError(f"give a recipe's output_dir ({args.folder}) or --selection {args.selection}, not "
                                "both.")
        if args.model_id:
            raise HFSelectError("--selection pushes a dataset only; push a model you trained with its own tools "
                                "(see SelectionProvenanceCallback in hf_select.callbacks) or from a recipe's "
                                "output_dir.")
        if args.dataset_id is None:
            raise HFSelectError(f"--selection {args.selection}: give the dataset repository, --dataset-id "
                                "owner/name.")
        if not is_hub_id(args.dataset_id):  # before reading the folder
            raise HFSelectError(f"{args.dataset_id!r} is not a Hub dataset id (expected 'owner/name', e.g. "
                                "--dataset-id me/alpaca-top10).")
        result = load_selection_folder(args.selection)
        url = push_selection(result, args.dataset_id, label=args.selection, private=not args.allow_public,
                             with_pool=args.with_pool is not None, pool=args.with_pool or None, source=args.source,
                             source_revision=args.source_revision, license=args.license, report_dir=args.report)
        print(f"pushed the dataset: {url}")
        return 0
    if args.folder is None:
        raise HFSelectError("nothing to push: give a recipe's output_dir, or --selection DIR (the folder "
                            "`hf-select select` wrote) with --dataset-id owner/name.")
    extra = [flag for flag, value in (("--with-pool", args.with_pool), ("--report", args.report),
                                      ("--source", args.source), ("--source-revision", args.source_revision),
                                      ("--license", args.license)) if value is not None]
    if extra:
        raise HFSelectError(f"{', '.join(extra)} apply to --selection DIR; a recipe's cards are written by the "
                            "recipe (its --license, report and source).")
    from ..hub import push_outputs

    urls = push_outputs(args.folder, dataset_id=args.dataset_id, model_id=args.model_id,
                        allow_public=args.allow_public)
    for kind, url in urls.items():
        print(f"pushed the {kind}: {url}")
    return 0
