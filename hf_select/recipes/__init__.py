"""The recipes: one module per method, each a pipeline of resumable stages that scores, selects, fine-tunes with
TRL's ``SFTTrainer``, measures held-out loss and writes the cards.

- :mod:`hf_select.recipes.superfilter`: Superfiltering (``run_superfilter``, ``SuperfilterArguments``);
- :mod:`hf_select.recipes.cherry`: Cherry LLM (``run_cherry``, ``CherryArguments``);
- :mod:`hf_select.recipes.mods`: MoDS (``run_mods``, ``MoDSArguments``);
- :mod:`hf_select.recipes.instruct_mining`: InstructMining (``run_instruct_mining``, ``InstructMiningArguments``).

They ship in the wheel together with their YAML configs (``hf_select/recipes/configs``) and accelerate configs
(``hf_select/recipes/accelerate``). From a checkout, ``recipes/<name>.py`` launches the same module; from an
installed wheel, ``python -m hf_select.recipes.mods --config mods_smollm2`` runs it with a shipped config
named by its file stem.

Example:
    >>> config_path("mods_smollm2").name
    'mods_smollm2.yaml'
    >>> shipped_configs("superfilter")
    ['superfilter_gpt2_llama3.2_1b', 'superfilter_smollm2', 'superfilter_smollm2_quickstart']
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HFSelectError

RECIPES = ("superfilter", "cherry", "mods", "instruct_mining")
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
ACCELERATE_DIR = Path(__file__).resolve().parent / "accelerate"


def config_path(name_or_path: str) -> Path:
    """The YAML file ``--config`` names: an existing path as given, else a config shipped with the package, by its
    stem (``mods_smollm2``), its file name (``mods_smollm2.yaml``) or its checkout path
    (``recipes/configs/mods_smollm2.yaml``, so the README's commands also run outside a checkout).

    Raises:
        HFSelectError: neither a file nor a shipped config; the message lists the shipped ones.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIGS_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    named = len(path.parts) == 1 or path.parts[-3:-1] == ("recipes", "configs")
    if named and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
    raise HFSelectError(f"--config {name_or_path!r}: no such file, and no shipped config of that name (shipped: "
                        f"{names})")


def shipped_configs(recipe: str) -> list[str]:
    """The names (file stems) of the YAML configs shipped for ``recipe`` (one of :data:`RECIPES`), sorted; none for
    another name.

    Example:
        >>> shipped_configs("cherry")
        ['cherry_llama3.2_1b', 'cherry_smollm2']
    """
    if recipe not in RECIPES:
        return []
    return sorted(p.stem for p in CONFIGS_DIR.glob(f"{recipe}_*.yaml"))
